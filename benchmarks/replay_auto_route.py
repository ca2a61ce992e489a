"""Replays `auto`'s route checks over recorded eval results, with no model call (docs/quality.md, "What was tried").

For each `auto` line that retrieval answered: the retrieved chunks are rebuilt from `extras.retrieved` (the same
~300-token chunking, with the model's tokenizer), and when the answer does not stand on them
(`AutoStrategy.unsupported_answer`: a number they do not hold, or what the answer adds standing in no sentence
that names the question's names), the fallback's answer is taken from the line for the fallback strategy on the
same case (the same run's, or a replay's: `--fallback replay:chain`). A line that retrieval could not answer
takes the fallback's line too. Prints each case and the totals: the recorded `auto` against the replayed one.

    .venv/bin/python benchmarks/replay_auto_route.py --results 'RESULTS/*.jsonl' --cases n8k.jsonl n32k.jsonl \
        --tokenizer hf:DIR --auto base/auto --fallback base/chain:notes=map
"""

from __future__ import annotations

import argparse
import glob


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", required=True, help="a glob of results files")
    ap.add_argument("--cases", nargs="+", required=True)
    ap.add_argument("--tokenizer", required=True, help="the model whose tokenizer cut the chunks (hf:DIR)")
    ap.add_argument("--auto", default="base/auto")
    ap.add_argument("--fallback", default="base/chain:notes=map")
    a = ap.parse_args()

    from longread.backends import get_model
    from longread.workflows.auto import AutoStrategy
    from longread.eval.cases import load_cases
    from longread.eval.runner import read_results
    from longread.segmenting import segment_text
    from longread.workflows.rag import CHUNK_TOKENS

    tokenizer = get_model(a.tokenizer).tokenizer
    cases = {c.id: c for path in a.cases for c in load_cases(path)}
    lines = {(l.strategy, l.case): l for f in glob.glob(a.results) for l in read_results(f)}
    before = after = caught = 0
    for (strategy, case_id), line in sorted(lines.items()):
        if strategy != a.auto or case_id not in cases or line.failed:
            continue
        score = line.score or 0.0
        recorded_fallback = lines.get((a.fallback, case_id))
        fallback = (recorded_fallback.score if recorded_fallback else None) or 0.0
        if line.extras.get("route") != "rag":
            new = fallback  # retrieval could not answer: the (replayed) fallback's answer
        else:
            pieces = segment_text(cases[case_id].load_document().text, tokenizer, CHUNK_TOKENS)
            excerpts = "\n".join(pieces[i].text for i in line.extras.get("retrieved", []))
            why = AutoStrategy.unsupported_answer(line.answer, excerpts, line.question)
            new = score
            if why:
                caught += 1
                new = fallback
                print(f"{case_id}: {line.answer[:50]!r}: {why}; {score} -> {new} ({a.fallback})")
        before, after = before + score, after + new
    print(f"{caught} caught; recorded auto {before:.0f}, replayed {after:.0f}")


if __name__ == "__main__":
    main()
