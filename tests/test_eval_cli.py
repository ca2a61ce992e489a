"""`longread eval` through the real command line (typer's CliRunner) on a MockModel."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from longread.cli import app

runner = CliRunner()
STORY = " ".join(f"The keeper lit lamp number {i} and watched the sea for a while." for i in range(400))


@pytest.fixture
def book(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text(STORY, encoding="utf-8")
    return path


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_needles_run_resume_and_report(tmp_path, book):
    cases_dir, results, report = tmp_path / "needles", tmp_path / "r.jsonl", tmp_path / "report"
    made = invoke("eval", "needles", "--book", book, "--lengths", "600", "1k", "--depths", "0", "1",
                  "--seed", "4", "--out", cases_dir)
    assert made.exit_code == 0, made.output
    cases = [json.loads(l) for l in (cases_dir / "cases.jsonl").read_text().splitlines()]
    assert len(cases) == 2 * 2 * 3 and made.output.startswith(f"wrote 12 cases to {cases_dir / 'cases.jsonl'}")
    assert {c["metadata"]["length"] for c in cases} == {600, 1000}

    ran = invoke("eval", cases_dir / "cases.jsonl", "--strategy", "chain", "--model", "mock", "--window", "512",
                 "--limit", "3", "--out", results)
    assert ran.exit_code == 0, ran.output
    assert len(results.read_text().splitlines()) == 3
    assert "3 run, 0 already done, of 3" in ran.output

    again = invoke("eval", cases_dir / "cases.jsonl", "-s", "chain", "-m", "mock", "-w", "512", "-w", "1024",
                   "--limit", "3", "--out", results)
    assert again.exit_code == 0, again.output
    assert "3 run, 3 already done, of 6" in again.output
    lines = [json.loads(l) for l in results.read_text().splitlines()]
    assert sorted((l["case"], l["window"]) for l in lines) == sorted(
        (c["id"], w) for c in cases[:3] for w in (512, 1024))

    reported = invoke("eval", "report", results, "--out", report)
    assert reported.exit_code == 0, reported.output
    assert reported.output.strip() == str(report / "report.md")
    assert "| chain · w1024 |" in (report / "report.md").read_text()
    assert (report / "scores.png").stat().st_size > 0


def test_dataset_command(tmp_path):
    source = tmp_path / "sci.jsonl"
    source.write_text(json.dumps({"input": "A story.", "instructions": ["It rains, True or False?"],
                                  "outputs": ["True [fact: False]"]}) + "\n", encoding="utf-8")
    result = invoke("eval", "dataset", "sci_fi", source, "--out", tmp_path / "set")
    assert result.exit_code == 0, result.output
    assert "wrote 1 cases" in result.output and (tmp_path / "set" / "documents" / "sci_fi-00.txt").is_file()


def test_bad_cases_file_is_one_line(tmp_path):
    bad = tmp_path / "cases.jsonl"
    bad.write_text('{"id": "a", "dataset": "x", "text": "t"}\n', encoding="utf-8")
    result = invoke("eval", bad, "--strategy", "chain", "--model", "mock", "--window", "512",
                    "--out", tmp_path / "r.jsonl")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: {bad} line 1: give exactly one of `answers`, `choices` (with `answer`), `references`, `items` and "
        "`count`"]
    missing = invoke("eval", "report", tmp_path / "none.jsonl", "--out", tmp_path / "o")
    assert missing.exit_code == 1 and "none.jsonl: no such file" in missing.output


def test_usage_errors(tmp_path, book):
    cases = tmp_path / "c.jsonl"
    cases.write_text('{"id": "a", "dataset": "x", "text": "t", "answers": ["a"]}\n', encoding="utf-8")
    unknown = invoke("eval", cases, "--strategy", "no-such-way", "--window", "512", "--out", tmp_path / "r.jsonl")
    assert unknown.exit_code == 2 and "no-such-way" in unknown.output
    bad_kv = invoke("eval", cases, "-s", "chain", "-w", "512", "--kv", "quant:3", "--out", tmp_path / "r.jsonl")
    assert bad_kv.exit_code == 2 and "quant:3" in bad_kv.output
    bad_depth = invoke("eval", "needles", "--book", book, "--lengths", "600", "--depths", "2", "--out", tmp_path)
    assert bad_depth.exit_code == 2
    bad_length = invoke("eval", "needles", "--book", book, "--lengths", "lots", "--depths", "0", "--out", tmp_path)
    assert bad_length.exit_code == 2 and "not a number of tokens" in bad_length.output
    long = invoke("eval", "needles", "--book", book, "--lengths", "900k", "--depths", "0", "--out", tmp_path / "n")
    assert long.exit_code == 1 and "needs a longer book" in long.output


def test_help_lists_the_commands_and_the_default():
    result = invoke("eval", "--help")
    assert result.exit_code == 0
    for word in ("needles", "report", "dataset", "run", "longread eval CASES.jsonl --strategy NAME"):
        assert word in result.output


def test_help_imports_no_heavy_library():
    code = ("import sys; from typer.testing import CliRunner; from longread.cli import app; "
            "r = CliRunner().invoke(app, ['eval', '--help']); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('matplotlib', 'rouge_score', 'scipy', 'nltk') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
