"""Replay recorded grounded-chain runs through the current code: the workers' replies as a GPU run recorded them,
the checks, the resolution, the name following and the manager as they are now (the manager's call made again, on
this machine's model).

What changed in code between a run and now (checks, resolution, anchors, collapse, the manager's prompt) is then
measured on the same cases without the cost of the workers' calls. A worker's own input may differ from the
recorded one (the chain form shows the claims kept so far, and the rules that keep them changed): its recorded
reply is used as it was. Lines are written as `longread eval` writes them, with strategy REPLAY_LABEL, so
`longread eval report` reads them beside the run's own lines.

    python benchmarks/replay_grounded.py --results run.jsonl --cases gpu_cases/needles/cases.jsonl \
        --model /path/to/qwen15 --out replay.jsonl [--strategy base/chain] [--limit N]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from longread import Reader  # noqa: E402
from longread.backends.base import ChatModel, Completion  # noqa: E402
from longread.eval.cases import load_cases  # noqa: E402
from longread.eval.record import EvalRecord  # noqa: E402
from longread.eval.runner import ResultsFile, Setting, case_record, question_for, read_results  # noqa: E402

REPLAY_LABEL = "replay:chain"


class Replayed(ChatModel):
    """The model of a replay: a worker's call answers with the recorded reply for its segment; every other call
    goes to the real model."""

    accepts_tag = True

    def __init__(self, real: ChatModel, replies: dict[int, str]):
        self.real, self.replies = real, replies
        self.name, self.tokenizer, self.context_window = real.name, real.tokenizer, real.context_window
        self.is_local = real.is_local
        self.missing = 0

    def count_prompt_tokens(self, messages, cache_prefix=None):
        return self.real.count_prompt_tokens(messages, cache_prefix)

    def _complete(self, messages, max_new_tokens, temperature, prompt_tokens, cache_prefix, tag=None, **_: Any):
        if tag is not None and tag.agent == "worker":
            if tag.segment not in self.replies:
                self.missing += 1
            text = self.replies.get(tag.segment, "Claim: none")
            return Completion(text, prompt_tokens, len(self.tokenizer.encode(text)), 0.0)
        return self.real.complete(messages, max_new_tokens, temperature, cache_prefix=cache_prefix)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", required=True, type=Path)
    ap.add_argument("--cases", required=True, type=Path, action="append")
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--strategy", default="base/chain")
    ap.add_argument("--window", type=int, default=4096)
    ap.add_argument("--limit", type=int, default=0)
    a = ap.parse_args()

    from longread.backends import get_model

    cases = {c.id: c for f in a.cases for c in load_cases(f)}
    latest: dict[tuple, EvalRecord] = {}
    for line in read_results(a.results):
        if line.strategy == a.strategy and not line.failed and line.case in cases:
            latest[(line.dataset, line.case)] = line
    out = ResultsFile(a.out)
    done = {(record.dataset, record.case) for record in out.records if not record.failed}
    real = get_model(f"hf:{a.model}")
    todo = [k for k in sorted(latest) if k not in done][: a.limit or None]
    for number, key in enumerate(todo, 1):
        line, case = latest[key], cases[key[1]]
        replies = {c["segment"]: c["reply"] for c in line.calls if c["agent"] == "worker"}
        model = Replayed(real, replies)
        document = case.load_document()
        started = time.monotonic()
        reader = Reader(document, model=model, window=a.window, strategy="chain")
        question = question_for(case)
        try:
            result = reader.summarize() if question is None else reader.ask(question)
            new = case_record(case, Setting(REPLAY_LABEL, line.model, a.window), result=result,
                              seconds=time.monotonic() - started, model_name=line.model_name,
                              document=document)
            new.extras = {**new.extras, "replayed_from": a.strategy, "missing_replies": model.missing,
                          "recorded_score": line.score}
        except Exception as exc:  # one case's failure is its line's error
            new = case_record(case, Setting(REPLAY_LABEL, line.model, a.window), error=exc)
        out.append(new)
        print(f"[{number}/{len(todo)}] {key[1]}: {line.score} -> {new.score} "
              f"(segments {new.segments}, recorded workers {len(replies)}, missing {model.missing}) "
              f"{new.answer[:80]!r}", flush=True)


if __name__ == "__main__":
    main()
