"""EvalRecord: the JSON line `longread eval` writes is the one it always wrote, and every results file written
before (older lines lack newer fields) reads back."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from longread.errors import DamagedDataWarning
from longread.eval.cases import Case
from longread.eval.record import EvalRecord
from longread.eval.runner import ResultsFile, Setting, case_record, read_results
from longread.results import CallRecord, Result

REPO = Path(__file__).resolve().parents[1]
RECORDED = sorted((REPO / "docs" / "quality").glob("run*/*.jsonl.gz"))  # results files of real GPU runs
# The keys of a line, in their order (docs/evaluation.md, "The results file"); `extras` only when the read set any.
KEYS = ["case", "dataset", "task", "strategy", "model", "window", "kv", "score", "metrics", "answer", "calls", "usage",
        "seconds", "document_tokens", "segments", "error", "gpu_peak_bytes", "extras", "question", "gold",
        "model_name", "metadata", "finished_at"]


def a_result(extras: dict | None = None) -> Result:
    call = CallRecord("manager", None, 10, 3, 16, 0.5, 0.001, reply="w1")
    return Result(mode="query", text="It is w1.", question="What is it?", citations=[], segments=2, calls=[call],
                  window=512, model="mock", source="t", title="t", document_tokens=40, extras=extras or {})


CASE = Case(id="c1", dataset="toy", question="What is it?", text="It is w1.", answers=("w1",),
            metadata={"length": 100})


def test_a_scored_record_writes_the_keys_in_their_order_and_reads_back_equal(tmp_path):
    record = case_record(CASE, Setting("chain", "mock", 512), result=a_result({"route": "rag"}), seconds=1.23456,
                         model_name="mock")
    data = record.to_dict()
    assert list(data) == KEYS
    assert (data["score"], data["answer"], data["seconds"], data["segments"]) == (1.0, "It is w1.", 1.235, 2)
    assert data["calls"][0]["agent"] == "manager" and data["usage"]["calls"] == 1 and data["extras"] == {"route": "rag"}
    out = ResultsFile(tmp_path / "r.jsonl")
    out.append(record)
    assert json.loads((tmp_path / "r.jsonl").read_text()) == data
    assert read_results(tmp_path / "r.jsonl") == [record]
    assert record.key == ("toy", "c1", "chain", "mock", 512, None) == Setting("chain", "mock", 512).key(CASE)


def test_a_failed_record_has_no_score_and_no_extras_key():
    record = case_record(CASE, Setting("rag", "mock", 512, "quant:4"), error=RuntimeError("fell over\nhard"))
    data = record.to_dict()
    assert list(data) == [key for key in KEYS if key != "extras"]
    assert record.failed and not record.scored and data["error"] == "RuntimeError: fell over hard"
    assert data["score"] is None and data["kv"] == "quant:4"


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: p.name)
def test_every_recorded_line_reads_and_writes_back_as_it_was(path):
    """Lines of run 5 predate `gpu_peak_bytes`: they read with it None, and everything else is kept as written."""
    lines = [json.loads(raw) for raw in gzip.open(path, "rt", encoding="utf-8")]
    assert lines
    for line in lines:
        assert EvalRecord.from_dict(line).to_dict() == {"gpu_peak_bytes": None, **line}


def test_a_line_without_a_case_or_with_nulls_for_its_maps(tmp_path):
    path = tmp_path / "r.jsonl"
    base = {"dataset": "d", "case": "a", "strategy": "chain", "model": "m", "window": 1}
    lines = [{**base, "metrics": None, "usage": None, "metadata": None}, {k: v for k, v in base.items() if k != "case"}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.warns(DamagedDataWarning, match=r"line 2 has no 'case'; left out"):
        (only,) = read_results(path)
    assert (only.metrics, only.usage, only.metadata, only.task, only.kv) == ({}, {}, {}, "", None)
