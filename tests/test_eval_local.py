"""A 3-case eval on the real embedded model (SmolLM2-135M): the whole path, model loaded once, lines scored."""

from __future__ import annotations

import json
import random

import pytest

from longread.eval.cases import load_cases
from longread.eval.needles import write_needles
from longread.eval.runner import Setting, run_eval

pytestmark = pytest.mark.slow


def test_three_needle_cases_on_the_embedded_model(tmp_path, embedded_model, one_torch_thread):
    rng = random.Random(0)
    sentences = [f"The {rng.choice(['keeper', 'pilot', 'cook'])} {rng.choice(['rowed out', 'lit the lamp', 'slept'])} "
                 f"{rng.choice(['at dawn', 'in the fog', 'after supper'])}." for _ in range(400)]
    book = tmp_path / "book.txt"
    book.write_text(" ".join(sentences), encoding="utf-8")
    cases_file, _ = write_needles(book, [300], [0.5], 1, tmp_path / "needles")  # one segment each: 2 calls a case
    cases = load_cases(cases_file)
    assert [c.metadata["kind"] for c in cases] == ["single", "pair", "distractor"]

    built = []

    def factory(model, kv=None):
        built.append(model)
        return embedded_model

    out = tmp_path / "results.jsonl"
    summary = run_eval(cases, [Setting("chain", "local", 1024)], out, model_factory=factory)
    lines = [json.loads(l) for l in out.read_text().splitlines()]
    assert built == ["local"] and summary.ran == 3
    for line in lines:
        assert line["error"] is None, line["error"]
        assert line["score"] in (0.0, 1.0) and line["answer"].strip()
        assert line["usage"]["calls"] == len(line["calls"]) >= 2
        assert {c["agent"] for c in line["calls"]} <= {"worker", "manager", "judge", "reader", "controller"}
        assert line["document_tokens"] > 200 and line["seconds"] > 0
