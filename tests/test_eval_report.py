"""The eval report: tables with intervals and cost, failures, and PNG plots, from a small results file."""

from __future__ import annotations

import json

import pytest

from longread.eval.record import EvalRecord
from longread.eval.report import Labeller, _length_bins, load_results, write_report, write_summary

PNG = b"\x89PNG\r\n\x1a\n"


def line(case, dataset, strategy, score, *, window=4096, kv=None, error=None, metadata=None, seconds=2.0, calls=3):
    return {
        "case": case, "dataset": dataset, "task": "short", "strategy": strategy, "model": "mock", "window": window,
        "kv": kv, "score": None if error else score, "metrics": {}, "answer": "", "calls": [],
        "usage": {} if error else {"calls": calls, "prompt_tokens": 1000, "completion_tokens": 50, "cost_usd": 0.002},
        "seconds": seconds, "document_tokens": 9000, "error": error, "metadata": metadata or {},
    }


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("results")
    rows = []
    for i in range(4):  # chain: 4 of 4, rag: 2 of 4 on "toy"
        rows.append(line(f"t{i}", "toy", "chain", 1.0, seconds=10.0, calls=6))
        rows.append(line(f"t{i}", "toy", "rag", float(i % 2)))
    for kind in ("single", "pair"):
        for length in (2000, 8000):
            for depth in (0.0, 0.5, 1.0):
                meta = {"kind": kind, "length": length, "depth": depth}
                case = f"needle-{kind}-{length}-{depth}"
                rows.append(line(case, f"needle-{kind}", "chain", 1.0, metadata=meta))
                rows.append(line(case, f"needle-{kind}", "rag", 1.0 if depth < 1 else 0.0, metadata=meta))
    rows.append(line("broken", "toy", "rag", None, error="WindowTooSmall: the window cannot hold the prompt"))
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def report(results):
    """The report of `results`, written once for the module (plots take seconds)."""
    return write_report([results], results.parent / "report")


def test_report_tables(report):
    text = report.read_text(encoding="utf-8")
    assert report.name == "report.md"
    assert "| setting | needle-pair | needle-single | toy |" in text
    # chain is always right: a degenerate interval; rag's 2 of 4 gets a real one
    assert "| chain | 1.000 [1.000, 1.000] (n 6) | 1.000 [1.000, 1.000] (n 6) | 1.000 [1.000, 1.000] (n 4) |" in text
    rag = next(row for row in text.splitlines() if row.startswith("| rag | "))
    assert "0.667 [" in rag and "0.500 [0.000, 1.000] (n 4)" in rag
    # cost per case beside them, failures counted and listed
    assert "| chain | toy | 4 | 0 | 6.0 | 1,000 | 50 | $0.0020 | 10.0 |" in text
    assert "| rag | toy | 4 | 1 | 3.0 |" in text
    assert "## Failures" in text and "WindowTooSmall: the window cannot hold the prompt | 1 |" in text
    # needles by kind and length
    assert "| setting | pair 2k | pair 8k | single 2k | single 8k |" in text
    assert "| rag | 0.67 (3) | 0.67 (3) | 0.67 (3) | 0.67 (3) |" in text


def test_report_plots(report):
    for name in ("scores.png", "accuracy_by_length.png", "needles_heatmap.png", "cost.png"):
        data = (report.parent / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, name
        assert f"]({name})" in report.read_text(encoding="utf-8")


def test_no_needles_no_heat_map(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(line("a", "toy", "chain", 1.0)) + "\n", encoding="utf-8")
    write_report([path], tmp_path / "out")
    assert not (tmp_path / "out" / "needles_heatmap.png").exists()
    text = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "## Needles" not in text and "1.000 (n 1)" in text


def test_the_last_line_of_a_key_wins_across_files(tmp_path):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text(json.dumps(line("a", "toy", "chain", None, error="Timeout: slow")) + "\n", encoding="utf-8")
    second.write_text(json.dumps(line("a", "toy", "chain", 1.0)) + "\n", encoding="utf-8")
    (only,) = load_results([first, second])
    assert only.score == 1.0


def test_settings_are_named_by_what_varies():
    lines = [EvalRecord.from_dict(line("a", "toy", "chain", 1.0, window=2048, kv="quant:4")),
             EvalRecord.from_dict(line("a", "toy", "chain", 1.0, window=4096))]
    label = Labeller.of(lines)
    assert [label(l) for l in lines] == ["chain · w2048 · kv quant:4", "chain · w4096 · kv default"]
    assert Labeller.of(lines[:1])(lines[0]) == "chain"


def test_length_bins():
    assert _length_bins([8000, 32000, 8000]) == [(8000, 8000), (32000, 32000)]
    bins = _length_bins([3000, 5000, 6000, 7000, 9000, 12000, 20000, 30000, 40000])
    assert bins[0] == (2048, 4095) and all(any(lo <= v <= hi for lo, hi in bins) for v in (3000, 40000))


def test_nothing_to_report(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="no result lines"):
        write_report([empty], tmp_path / "out")


def test_the_summary_file_holds_one_row_per_setting_dataset_and_needle_length(results, tmp_path):
    target = write_summary([results], tmp_path / "q.json", machine="a laptop", command="longread eval run ...")
    document = json.loads(target.read_text(encoding="utf-8"))
    assert (document["benchmark"], document["machine"], document["command"]) == ("quality", "a laptop",
                                                                              "longread eval run ...")
    rows = {(r["strategy"], r["dataset"], r["length"]): r for r in document["results"]}
    # needles split by length (3 depths each), other datasets pooled; rag misses the depth-1.0 needle
    assert rows[("rag", "needle-pair", 8000)]["n"] == 3 and rows[("rag", "needle-pair", 8000)]["score"] == 0.667
    assert rows[("chain", "needle-single", 2000)]["ci95"] == [1.0, 1.0]
    toy = rows[("rag", "toy", None)]
    assert (toy["n"], toy["errors"], toy["score"], toy["calls"]) == (4, 1, 0.5, 3.0)
    low, high = toy["ci95"]
    assert 0.0 <= low < 0.5 < high <= 1.0
    assert rows[("chain", "toy", None)]["seconds"] == 10.0 and len(rows) == 10


def test_the_summary_section_shows_what_rouge_does_not(tmp_path):
    rows = []
    for i, (strategy, repeated, unsupported) in enumerate([("chain", 0, 0.5), ("chain", 0, 1.5), ("truncate", 2, 4.0)]):
        row = line(f"s{i}", "squality_summary", strategy, 0.2)
        row["task"] = "summary"
        row["metrics"] = {"rouge_l": 0.2, "coverage": 0.4, "repeated_sentences": repeated,
                          "repeated_3gram_share": 0.1, "unsupported_per_100_words": unsupported, "words": 300}
        rows.append(row)
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    text = write_report([path], tmp_path / "out").read_text()
    section = text.split("## Summaries", 1)[1]
    assert "| chain | 2 | 0.200 | 0.400 | 0.00 | 0.100 | 1.00 | 300 |" in section  # means by hand: (0.5 + 1.5) / 2
    assert "| truncate | 1 | 0.200 | 0.400 | 2.00 | 0.100 | 4.00 | 300 |" in section
    summary = json.loads(write_summary([path], tmp_path / "q.json", machine="m", command="c").read_text())
    chain = next(r for r in summary["results"] if r["strategy"] == "chain")
    assert chain["unsupported_per_100_words"] == 1.0 and chain["repeated_sentences"] == 0.0
