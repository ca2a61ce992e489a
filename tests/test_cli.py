"""The command line on MockModels: output contracts, summary files, skips, failures, hostile names, dry runs, resume."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path, PurePath

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console
from typer.testing import CliRunner

import longread.backends
from longread import Reader
from longread.cli import app
from longread.cli.run.jobs import Job
from longread.cli.run.outputs import OutputFolder
from longread.cli.run.workspace import checkpoints_path, open_checkpointer
from longread.cli.display.console import Display
from longread.documents import load_document
from longread.errors import DocumentError, ModelError
from longread.testing import MockModel

QUESTION = "How many boats went out?"
ANSWER = "The harbour master counted twelve boats."
PARAGRAPH = (
    "The harbour master counted the boats each morning at dawn. He wrote the number in a green book. "
    "On windy days fewer boats went out, and he wrote that down too. "
)


def long_text(paragraphs: int = 30, tag: str = "") -> str:
    return "\n\n".join(f"Paragraph {i}{tag}. " + PARAGRAPH * 3 for i in range(paragraphs))



def answering_mock(**options) -> MockModel:
    """A MockModel whose manager always gives ANSWER (workers write derived notes), so stdout can be checked."""
    return MockModel(completion_tokens=20, replies={"manager": ANSWER}, **options)


@pytest.fixture(autouse=True)
def isolated(cli_isolated):
    """No test touches the user's cache folder, and rich tables are wide enough not to fold file names."""


@pytest.fixture
def use_model(monkeypatch):
    """Makes the CLI build `model` whatever --model says (the CLI resolves models through backends.get_model)."""
    def install(model):
        monkeypatch.setattr(longread.backends, "get_model", lambda *args, **kwargs: model)
        return model

    return install


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def squash(text: str) -> str:
    """Whitespace collapsed, box-drawing characters dropped: what a table says, whatever its line breaks."""
    return " ".join(re.sub(r"[│┃┏┓┗┛━─┡┩└┘┌┐╇╈┳┻╋├┤┼]", " ", text).split())


def files_below(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


# -- ask --------------------------------------------------------------------------------------------------------------
def test_ask_prints_the_answer_then_citations_and_usage(tmp_path, use_model):
    doc = tmp_path / "harbour.txt"
    doc.write_text(long_text())
    model = use_model(answering_mock())

    result = invoke("ask", doc, QUESTION, "--window", 1024)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == ANSWER
    assert "citations:" in lines
    usage = [line for line in lines if line.startswith("usage: ")]
    assert len(usage) == 1 and f"{len(model.calls)} calls" in usage[0] and "window 1024" in usage[0]
    # Citation lines name segments that the workers read and spans inside the document.
    text = doc.read_text()
    for match in re.finditer(r"segment (\d+)/(\d+): chars (\d+)-(\d+)", result.stdout):
        number, total, start, end = map(int, match.groups())
        assert 1 <= number <= total == len(model.calls) - 1
        assert 0 <= start < end <= len(text)


def test_ask_json_has_the_fields_of_design_md_and_nothing_else_on_stdout(tmp_path, use_model):
    doc = tmp_path / "harbour.txt"
    doc.write_text(long_text())
    model = use_model(answering_mock())

    result = invoke("ask", doc, QUESTION, "--window", 1024, "--json")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert data["answer"] == ANSWER and data["source"] == str(doc) and data["window"] == 1024
    n = data["segments"]
    assert n >= 3 and len(data["calls"]) == n + 1 == len(model.calls)
    for call in data["calls"]:
        assert {"agent", "segment", "prompt_tokens", "completion_tokens", "max_new_tokens", "seconds"} <= call.keys()
        assert call["prompt_tokens"] + call["max_new_tokens"] <= 1024
    assert [c["agent"] for c in data["calls"]] == ["worker"] * n + ["manager"]
    assert [c["segment"] for c in data["calls"][:n]] == list(range(n))
    assert data["usage"]["prompt_tokens"] == sum(c.prompt_tokens for c in model.calls)
    assert data["usage"]["completion_tokens"] == sum(c["completion_tokens"] for c in data["calls"])
    assert "cost_usd" in data["usage"]
    text = doc.read_text()
    assert data["citations"], "derived notes are never 'nothing relevant', so every worker leaves evidence"
    for citation in data["citations"]:
        assert set(citation) == {"segment", "start", "end"}
        assert 0 <= citation["segment"] < n and 0 <= citation["start"] < citation["end"] <= len(text)


def test_ask_on_a_folder_answers_each_document_under_its_name(tmp_path, use_model):
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "one.txt").write_text(long_text(8))
    (folder / "sub" / "two.md").write_text(long_text(8, tag=" (two)"))
    use_model(answering_mock())

    plain = invoke("ask", folder, QUESTION, "--window", 1024)
    as_json = invoke("ask", folder, QUESTION, "--window", 1024, "--json")

    assert plain.exit_code == 0 and as_json.exit_code == 0
    headings = [line for line in plain.stdout.splitlines() if line.startswith("==> ")]
    assert headings == [f"==> {folder / 'one.txt'} <==", f"==> {folder / 'sub' / 'two.md'} <=="]
    assert plain.stdout.count(ANSWER) == 2
    objects = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [o["source"] for o in objects] == [str(folder / "one.txt"), str(folder / "sub" / "two.md")]


class TerminalOut(io.StringIO):
    """stdout on the same terminal as the display."""

    def isatty(self) -> bool:
        return True


def test_progress_display_follows_the_chain_events():
    model = MockModel(completion_tokens=20)
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    with Display(console, documents=1, stdout=TerminalOut()) as display:
        line = display.document("harbour.txt")
        result = Reader(long_text(), strategy="chain:notes=rewrite", model=model, window=1024).ask(QUESTION, on_event=line.on_event)
        task = display.progress.tasks[line.task]
        assert task.total == task.completed == result.segments
        assert line.tally.calls == len(result.calls)
        assert line.tally.tokens == result.usage.prompt_tokens + result.usage.completion_tokens
        assert len(line.tally.segment_seconds) == result.segments  # the ETA's measurements
        display.finish(line, "done")
        assert display.done == 1 and display.progress.tasks[display.overall].completed == 1
    assert "harbour.txt" in console.file.getvalue()


# -- errors -----------------------------------------------------------------------------------------------------------
def test_a_single_bad_file_gives_one_error_line_naming_it(tmp_path, use_model):
    use_model(answering_mock())
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DocumentError) as expected:
        load_document(empty)

    result = invoke("ask", empty, QUESTION)

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [f"error: {empty}: {' '.join(expected.value.reason.split())}"]


def test_a_missing_path_is_an_error_naming_it(tmp_path, use_model):
    use_model(answering_mock())
    missing = tmp_path / "nowhere" / "book.txt"
    result = invoke("summarize", missing, "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {missing}: ")
    assert not (tmp_path / "out").exists()


def test_a_window_too_small_is_a_clear_error_naming_the_file(tmp_path, use_model):
    model = use_model(answering_mock())
    doc = tmp_path / "harbour.txt"
    doc.write_text(long_text())

    result = invoke("ask", doc, QUESTION, "--window", 100)

    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {doc}: ") and "window of 100 tokens is too small" in line
    assert model.calls == []


def test_a_folder_with_a_corrupt_and_an_empty_file_finishes_the_others_and_lists_the_failures(tmp_path, use_model):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.txt").write_text(long_text(8))
    (folder / "also_good.md").write_text(long_text(8, tag=" (md)"))
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7\n\x00\xff garbage that is not a pdf \x13\x37" * 20)
    (folder / "empty.txt").write_text("")
    reasons = {}
    for name in ("broken.pdf", "empty.txt"):
        with pytest.raises(DocumentError) as error:
            load_document(folder / name)
        reasons[name] = error.value.reason
    use_model(answering_mock())
    out = tmp_path / "out"

    result = invoke("summarize", folder, "--out", out)

    assert result.exit_code == 1
    assert files_below(out) == {
        "good.txt.summary.md", "good.txt.summary.json", "also_good.md.summary.md", "also_good.md.summary.json"
    }
    table = squash(result.stderr)
    assert "2 of 4 document(s) failed" in table
    for name, reason in reasons.items():
        assert squash(f"{folder / name} {reason}") in table
    assert str(folder / "good.txt") not in table.split("document(s) failed", 1)[1]


# -- summarize --------------------------------------------------------------------------------------------------------
def make_tree(root: Path) -> dict[str, str]:
    texts = {
        "top.txt": long_text(6, " top"),
        "part one/chapter 1.md": long_text(6, " ch1"),
        "part one/deeper/notes.txt": long_text(6, " notes"),
    }
    for relative, text in texts.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    return texts


def test_summarize_a_folder_mirrors_its_tree_under_out(tmp_path, use_model):
    folder = tmp_path / "in"
    texts = make_tree(folder)
    use_model(MockModel(completion_tokens=30))
    out = tmp_path / "out"

    result = invoke("summarize", folder, "--out", out, "--window", 1024)

    assert result.exit_code == 0, result.output
    expected = {f"{rel}.summary.{ext}" for rel in texts for ext in ("md", "json")}
    assert files_below(out) == expected  # and no temporary files left behind
    assert result.stdout.splitlines() == sorted(str(out / f"{rel}.summary.md") for rel in texts)
    for relative, text in texts.items():
        data = json.loads((out / f"{relative}.summary.json").read_text())
        assert data["source"] == str(folder / relative)
        assert data["summary"].strip() and data["summary"].strip() in (out / f"{relative}.summary.md").read_text()
        assert all(0 <= c["start"] < c["end"] <= len(text) for c in data["citations"])


def test_summaries_written_inside_the_input_folder_are_not_summarized_again(tmp_path, use_model):
    folder = tmp_path / "in"
    texts = make_tree(folder)
    model = use_model(MockModel())
    out = folder / "summaries"

    assert invoke("summarize", folder, "--out", out, "--window", 1024).exit_code == 0
    calls = len(model.calls)
    again = invoke("summarize", folder, "--out", out, "--window", 1024, "--force")

    assert again.exit_code == 0
    assert len(model.calls) == 2 * calls  # the same documents again, not their summaries
    assert files_below(out) == {f"{rel}.summary.{ext}" for rel in texts for ext in ("md", "json")}


def test_summarize_a_file_names_its_outputs_after_the_file(tmp_path, use_model):
    doc = tmp_path / "deep" / "er" / "report.txt"
    doc.parent.mkdir(parents=True)
    doc.write_text(long_text(6))
    use_model(MockModel())
    out = tmp_path / "out"
    assert invoke("summarize", doc, "--out", out, "--window", 1024).exit_code == 0
    assert files_below(out) == {"report.txt.summary.md", "report.txt.summary.json"}


def test_a_rerun_skips_finished_documents_and_force_redoes_them(tmp_path, use_model):
    folder = tmp_path / "in"
    texts = make_tree(folder)
    model = use_model(MockModel(completion_tokens=30))
    out = tmp_path / "out"

    assert invoke("summarize", folder, "--out", out, "--window", 1024).exit_code == 0
    first_calls = len(model.calls)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.summary.*")}

    again = invoke("summarize", folder, "--out", out, "--window", 1024)
    assert again.exit_code == 0
    assert len(model.calls) == first_calls  # nothing read again
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.summary.*")} == stamps
    assert again.stderr.count("skipped ") == len(texts)

    # A document with only one of its two files is not finished: it alone is redone, from its kept checkpoint
    # (the finished chain is written again without a model call).
    (out / "top.txt.summary.json").unlink()
    partial = invoke("summarize", folder, "--out", out, "--window", 1024, "--json")
    redone = [json.loads(line) for line in partial.stdout.splitlines()]
    assert sorted(o.get("skipped", False) for o in redone) == [False, True, True]
    [fresh] = [o for o in redone if not o.get("skipped")]
    assert fresh["source"] == str(folder / "top.txt") and fresh["calls"]
    assert len(model.calls) == first_calls
    assert (out / "top.txt.summary.json").is_file()

    forced = invoke("summarize", folder, "--out", out, "--window", 1024, "--force")
    assert forced.exit_code == 0 and "skipped" not in forced.stderr
    assert len(model.calls) == 2 * first_calls


def test_a_failed_write_keeps_the_previous_summary_whole(tmp_path, use_model, monkeypatch):
    import longread.cli.run.outputs

    doc = tmp_path / "report.txt"
    doc.write_text(long_text(6))
    use_model(MockModel())
    out = tmp_path / "out"
    assert invoke("summarize", doc, "--out", out, "--window", 1024).exit_code == 0
    before = {p: p.read_bytes() for p in out.iterdir()}

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(longread.cli.run.outputs.os, "fsync", disk_full)
    result = invoke("summarize", doc, "--out", out, "--window", 1024, "--force")

    assert result.exit_code == 1
    assert result.stderr.splitlines() == [f"error: {doc}: cannot write {out / 'report.txt.summary.md'}: "
                                          "No space left on device"]  # the summary named, not a temporary file
    assert {p: p.read_bytes() for p in out.iterdir()} == before  # old files whole, no temporary file left


# -- hostile names ----------------------------------------------------------------------------------------------------
def test_hostile_names_and_symlinks_stay_inside_out(tmp_path, use_model):
    folder = tmp_path / "in"
    folder.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(long_text(4, " secret"))
    (outside / "nested").mkdir()
    (outside / "nested" / "deep.txt").write_text(long_text(4, " deep"))
    names = ["..evil.txt", "name with spaces.txt", "ünïcödé 名前.md", "tab\there.txt", "-dash.txt", "[brackets].txt"]
    for name in names:
        (folder / name).write_text(long_text(4, f" {name}"))
    (folder / "link.txt").symlink_to(outside / "secret.txt")
    (folder / "linkdir").symlink_to(outside / "nested", target_is_directory=True)
    before = files_below(outside)
    use_model(MockModel())
    out = tmp_path / "out"

    # ..evil.txt is hidden (dot name), so it is also named explicitly: a file PATH names its output after itself.
    result = invoke("summarize", folder, folder / "..evil.txt", "--out", out, "--window", 1024)

    assert result.exit_code == 0, result.output
    assert files_below(outside) == before
    written = list(out.rglob("*"))
    assert written and all(p.resolve().is_relative_to(out.resolve()) for p in written)
    produced = files_below(out)
    for name in names:
        assert f"{name}.summary.md" in produced and f"{name}.summary.json" in produced
    assert "link.txt.summary.md" in produced  # read through the link, written inside out
    assert not any(".." in PurePath(p).parts for p in produced)


def test_a_symlink_in_out_pointing_outside_is_refused(tmp_path, use_model):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "doc.txt").write_text(long_text(4))
    (folder / "fine.txt").write_text(long_text(4, " fine"))
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").symlink_to(outside, target_is_directory=True)
    use_model(MockModel())

    result = invoke("summarize", folder, "--out", out, "--window", 1024)

    assert result.exit_code == 1
    assert list(outside.iterdir()) == []
    assert (out / "fine.txt.summary.md").is_file()
    assert "would be outside" in squash(result.stderr) and str(folder / "sub" / "doc.txt") in squash(result.stderr)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.sampled_from(["..", ".", "/", "a", "..b", "~", "\\", " "]), st.text(min_size=1, max_size=8)),
                min_size=1, max_size=5))
def test_summary_files_never_leave_out_whatever_the_relative_name(tmp_path, parts):
    parts = [p.replace("\x00", "") for p in parts]
    root = tmp_path / "out"
    try:
        relative = PurePath(*[p for p in parts if p])
    except (TypeError, ValueError):
        return
    try:
        files = OutputFolder(root).files_for(Job(Path("x"), relative))
    except DocumentError:
        return
    for target in (files.markdown, files.json):
        assert target.resolve().is_relative_to(root.resolve())


# -- dry run ----------------------------------------------------------------------------------------------------------
def test_dry_run_on_an_api_model_estimates_a_cost_without_calling_it(tmp_path, monkeypatch):
    import litellm

    from longread.backends.litellm.model import LiteLLMModel

    def no_call(*args, **kwargs):
        raise AssertionError("a dry run must not call the model")

    monkeypatch.setattr(litellm, "completion", no_call)
    monkeypatch.setattr(litellm, "acompletion", no_call)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-DO-NOT-PRINT-4242")
    doc = tmp_path / "harbour.txt"
    doc.write_text(long_text(60))
    price_in, price_out = LiteLLMModel("openai/gpt-4o-mini").price_per_token()
    assert price_in > 0 and price_out > 0

    plain = invoke("ask", doc, QUESTION, "--model", "openai/gpt-4o-mini", "--dry-run", "--window", 2048)
    as_json = invoke("ask", doc, QUESTION, "--model", "openai/gpt-4o-mini", "--dry-run", "--window", 2048, "--json")

    assert plain.exit_code == 0 and as_json.exit_code == 0, plain.output + as_json.output
    data = json.loads(as_json.stdout)
    estimate = data["estimate"]
    assert data["dry_run"] is True
    # Nothing that looks like a result: no stand-in text, no stand-in citations, no cost that reads as spent.
    assert not {"answer", "citations", "usage"} & set(data)
    assert all("cost_usd" not in c and "completion_tokens" not in c for c in data["calls"])
    assert estimate["calls"] == len(data["calls"]) == data["segments"] + 1
    assert estimate["completion_tokens_max"] == sum(c["max_new_tokens"] for c in data["calls"])
    expected = sum(c["prompt_tokens"] for c in data["calls"]) * price_in + estimate["completion_tokens_max"] * price_out
    assert estimate["estimated_cost_usd_max"] == pytest.approx(expected) and expected > 0
    cost = re.search(r"estimated cost with openai/gpt-4o-mini: at most \$([0-9.]+)", plain.stdout)
    assert cost and float(cost.group(1)) == pytest.approx(expected, abs=5e-5)
    assert f"{data['segments']} segments, {estimate['calls']} calls" in plain.stdout
    for output in (plain.stdout, plain.stderr, as_json.stdout, as_json.stderr):
        assert "DO-NOT-PRINT" not in output
    assert not (tmp_path / "workspace").exists()  # a dry run leaves no checkpoints


def test_dry_run_counts_with_the_chosen_models_tokenizer_and_writes_no_summaries(tmp_path, use_model):
    folder = tmp_path / "in"
    make_tree(folder)
    chosen = use_model(MockModel(price=(1e-6, 4e-6)))
    out = tmp_path / "out"

    result = invoke("summarize", folder, "--out", out, "--dry-run", "--window", 1024, "--json")

    assert result.exit_code == 0, result.output
    assert chosen.calls == [] and not out.exists()
    for line in result.stdout.splitlines():
        data = json.loads(line)
        estimate = data["estimate"]
        # Every call writes its full cap, so completion tokens and cost are upper bounds.
        assert estimate["completion_tokens_max"] == sum(c["max_new_tokens"] for c in data["calls"])
        assert estimate["prompt_tokens"] == sum(c["prompt_tokens"] for c in data["calls"])
        assert estimate["estimated_cost_usd_max"] == pytest.approx(
            estimate["prompt_tokens"] * 1e-6 + estimate["completion_tokens_max"] * 4e-6
        )


# -- resume -----------------------------------------------------------------------------------------------------------
def worker_parts(model: MockModel) -> list[int]:
    """The segment number each recorded worker call read (from the 'part N' heading of its prompt)."""
    parts = []
    for call in model.calls:
        match = re.search(r"Source text \(part (\d+)\)", call.messages[-1]["content"])
        if match:
            parts.append(int(match.group(1)))
    return parts


def test_resume_after_a_failure_through_the_workspace_checkpoints(tmp_path):
    model = MockModel(completion_tokens=20, failure=ModelError, fail_on_calls={4})
    workspace = tmp_path / "workspace"
    with open_checkpointer(checkpoints_path(workspace)) as checkpointer, pytest.raises(ModelError):
        Reader(long_text(), strategy="chain:notes=rewrite", model=model, window=1024, checkpointer=checkpointer).ask(QUESTION)
    assert worker_parts(model) == [1, 2, 3]

    # A new connection, as a new process would open: the run resumes at the failed worker.
    with open_checkpointer(checkpoints_path(workspace)) as checkpointer:
        result = Reader(long_text(), strategy="chain:notes=rewrite", model=model, window=1024, checkpointer=checkpointer).ask(QUESTION)
    n = result.segments
    assert worker_parts(model) == list(range(1, n + 1))  # each segment read exactly once over both runs
    assert len(model.calls) == n + 1
    assert [c.segment for c in result.calls] == list(range(n)) + [None]


def test_the_cli_resumes_an_interrupted_run_and_force_starts_over(tmp_path, use_model):
    doc = tmp_path / "harbour.txt"
    doc.write_text(long_text())
    model = use_model(answering_mock(failure=ModelError, fail_on_calls={3}))

    failed = invoke("ask", doc, QUESTION, "--window", 1024, "--json")
    assert failed.exit_code == 1
    assert json.loads(failed.stdout) == {"source": str(doc), "error": "injected failure at call 3",
                                         "error_type": "ModelError"}  # --json: a failure is a JSON line too
    assert failed.stderr.splitlines() == [f"error: {doc}: injected failure at call 3"]
    assert len(model.calls) == 2

    resumed = invoke("ask", doc, QUESTION, "--window", 1024, "--json")
    assert resumed.exit_code == 0
    data = json.loads(resumed.stdout)
    n = data["segments"]
    assert worker_parts(model) == list(range(1, n + 1)) and len(model.calls) == n + 1
    assert data["answer"] == ANSWER and len(data["calls"]) == n + 1

    # A finished run is kept: the same command answers again without a call.
    again = invoke("ask", doc, QUESTION, "--window", 1024, "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["answer"] == ANSWER
    assert len(model.calls) == n + 1
    # --force starts over: every worker reads again from the start.
    assert invoke("ask", doc, QUESTION, "--window", 1024, "--force").exit_code == 0
    assert len(model.calls) == 2 * (n + 1) and worker_parts(model)[-n:] == list(range(1, n + 1))


def test_ctrl_c_exits_130_and_says_a_rerun_resumes(tmp_path, use_model):
    doc = tmp_path / "harbour.txt"
    doc.write_text(long_text())
    model = use_model(answering_mock(failure=KeyboardInterrupt, fail_on_calls={3}))

    interrupted = invoke("ask", doc, QUESTION, "--window", 1024)
    assert interrupted.exit_code == 130
    assert "run the same command again to resume" in squash(interrupted.stderr)

    resumed = invoke("ask", doc, QUESTION, "--window", 1024, "--json")
    assert resumed.exit_code == 0
    assert worker_parts(model) == list(range(1, json.loads(resumed.stdout)["segments"] + 1))


def test_an_unknown_kv_policy_is_a_usage_error_before_anything_loads(tmp_path, monkeypatch):
    def must_not_build(*args, **kwargs):
        raise AssertionError("no model should be built")

    monkeypatch.setattr(longread.backends, "get_model", must_not_build)
    doc = tmp_path / "harbour.txt"
    doc.write_text(long_text(4))
    result = CliRunner().invoke(app, ["ask", str(doc), QUESTION, "--kv", "quant:3"])
    assert result.exit_code == 2
    assert "--kv" in result.stderr and "quant:3" in result.stderr


def test_models_lists_the_model_string_forms():
    result = invoke("models")
    assert result.exit_code == 0
    for form in ("local", "hf:PATH", "openai/MODEL", "anthropic/MODEL", "mock"):
        assert form in result.stdout
