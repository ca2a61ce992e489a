"""Replays `auto`'s number check over recorded eval results, with no model call (docs/quality.md, "What was tried").

For each `auto` line that retrieval answered: the retrieved chunks are rebuilt from `extras.retrieved` (the same
~300-token chunking, with the model's tokenizer), and when the answer states a number they do not hold
(`longread.agents.notes.unsupported_numbers`), the fallback's answer is taken from the same run's line for the
fallback strategy on the same case. Prints each case and the totals: retrieval alone against retrieval + check.

    .venv/bin/python benchmarks/replay_auto_route.py --results 'RESULTS/*.jsonl' --cases n8k.jsonl n32k.jsonl \
        --tokenizer hf:DIR --auto base/auto --fallback base/chain:notes=map
"""

from __future__ import annotations

import argparse
import glob
import json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", required=True, help="a glob of results files")
    ap.add_argument("--cases", nargs="+", required=True)
    ap.add_argument("--tokenizer", required=True, help="the model whose tokenizer cut the chunks (hf:DIR)")
    ap.add_argument("--auto", default="base/auto")
    ap.add_argument("--fallback", default="base/chain:notes=map")
    a = ap.parse_args()

    from longread.agents.notes import unsupported_numbers
    from longread.backends import get_model
    from longread.eval.cases import load_cases
    from longread.segmenting import segment_text
    from longread.workflows.rag import CHUNK_TOKENS

    tokenizer = get_model(a.tokenizer).tokenizer
    cases = {c.id: c for path in a.cases for c in load_cases(path)}
    lines = {(l["strategy"], l["case"]): l for f in glob.glob(a.results) for l in map(json.loads, open(f))}
    before = after = caught = 0
    for (strategy, case_id), line in sorted(lines.items()):
        if strategy != a.auto or case_id not in cases or line["extras"].get("route") != "rag":
            continue
        pieces = segment_text(cases[case_id].load_document().text, tokenizer, CHUNK_TOKENS)
        excerpts = "\n".join(pieces[i].text for i in line["extras"].get("retrieved", []))
        invented = unsupported_numbers(line["answer"], excerpts, line["question"])
        score = line["score"] or 0.0
        if invented:
            caught += 1
            fallback = lines.get((a.fallback, case_id))
            new = (fallback or {}).get("score") or 0.0
            print(f"{case_id}: {line['answer'][:50]!r} states {invented}; {score} -> {new} ({a.fallback})")
        else:
            new = score
        before, after = before + score, after + new
    print(f"{caught} caught; retrieval alone {before:.0f}, with the check {after:.0f}")


if __name__ == "__main__":
    main()
