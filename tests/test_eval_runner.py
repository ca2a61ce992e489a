"""The eval runner: one line per case per setting, resume without recomputing, failures recorded, the model built
once per (model, kv), --jobs for API and local models, and the real read path on a MockModel."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

import pytest

from longread.eval.cases import Case
from longread.eval.metrics import choice_letter
from longread.eval.runner import (CHOICE_INSTRUCTION, ResultsFile, Setting, check_strategies, question_for,
                                  read_case, run_eval, settings_of)
from longread.results import CallRecord, Usage
from longread.testing import MockModel

CHOICES = {"A": "a lamp", "B": "a boat", "C": "a gull"}


def make_cases(n: int = 4) -> list[Case]:
    return [Case(id=f"c{i}", dataset="toy", question=f"What is item {i}?", text=f"Item {i} is the word w{i}.",
                 answers=(f"w{i}",), metadata={"length": 100 * (i + 1)}) for i in range(n)]


@dataclass
class FakeResult:
    text: str
    calls: list[CallRecord] = field(default_factory=list)
    document_tokens: int = 7
    segments: int = 1
    extras: dict = field(default_factory=dict)

    @property
    def usage(self) -> Usage:
        return Usage.of(self.calls)


class CountingRead:
    """A read function: answers the gold of even cases, records each (case, setting) it is asked to read."""

    def __init__(self, stop_after: int | None = None, fail: set[str] = frozenset(), delay: float = 0.0):
        self.seen: list[tuple[str, str, int]] = []
        self.stop_after = stop_after
        self.fail = fail
        self.delay = delay
        self.lock = threading.Lock()
        self.active = 0
        self.most_active = 0

    def __call__(self, case, document, model, *, strategy, window, kv, checkpointer):
        with self.lock:
            if self.stop_after is not None and len(self.seen) >= self.stop_after:
                raise KeyboardInterrupt  # the run is killed here
            self.seen.append((case.id, strategy, window))
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            if self.delay:
                time.sleep(self.delay)
            if case.id in self.fail:
                raise RuntimeError("the model fell over\nwith a second line")
            number = int(case.id[1:])
            call = CallRecord("manager", None, 10 + number, 3, 16, 0.5, 0.001)
            return FakeResult(f"It is w{number}." if number % 2 == 0 else "No idea.", [call])
        finally:
            with self.lock:
                self.active -= 1


class CountingFactory:
    def __init__(self, local: bool = False):
        self.built: list[tuple[str, str | None]] = []
        self.local = local

    def __call__(self, model, kv=None, **options):
        self.built.append((model, kv))
        self.options = options
        built = MockModel(name=model)
        built.is_local = self.local
        return built


def lines_of(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_one_line_per_case_per_setting_with_the_fields(tmp_path):
    out = tmp_path / "results.jsonl"
    read, factory = CountingRead(), CountingFactory()
    settings = settings_of(["chain", "rag"], ["mock"], [512, 1024])
    summary = run_eval(make_cases(3), settings, out, read=read, model_factory=factory)
    lines = lines_of(out)
    assert summary.ran == len(lines) == 3 * 4 and summary.failed == 0
    assert {(l["case"], l["strategy"], l["window"]) for l in lines} == {
        (f"c{i}", s, w) for i in range(3) for s in ("chain", "rag") for w in (512, 1024)}
    first = lines[0]
    for name in ("case", "dataset", "strategy", "model", "window", "kv", "score", "metrics", "answer", "calls",
                 "usage", "seconds", "document_tokens", "error", "metadata", "question", "gold"):
        assert name in first
    assert first["score"] == 1.0 and first["metrics"]["contains"] == 1.0 and first["error"] is None
    assert first["usage"]["calls"] == 1 and first["usage"]["prompt_tokens"] == 10
    assert first["calls"][0]["agent"] == "manager" and first["metadata"] == {"length": 100}
    assert next(l for l in lines if l["case"] == "c1")["score"] == 0.0
    # case-major: every setting of c0 before c1
    assert [l["case"] for l in lines[:4]] == ["c0"] * 4


def test_an_interrupted_eval_resumes_without_recomputing(tmp_path):
    out = tmp_path / "results.jsonl"
    settings = settings_of(["chain", "rag"], ["mock"], [512])
    cases = make_cases(4)
    killed = CountingRead(stop_after=3)
    with pytest.raises(KeyboardInterrupt):
        run_eval(cases, settings, out, read=killed, model_factory=CountingFactory())
    assert len(lines_of(out)) == 3
    resumed, factory = CountingRead(), CountingFactory()
    summary = run_eval(cases, settings, out, read=resumed, model_factory=factory)
    assert len(resumed.seen) == 8 - 3 and summary.skipped == 3 and summary.ran == 5
    assert set(killed.seen).isdisjoint(resumed.seen)
    keys = [(l["case"], l["strategy"]) for l in lines_of(out)]
    assert len(keys) == len(set(keys)) == 8
    # a third run reads nothing and builds no model
    again, factory = CountingRead(), CountingFactory()
    assert run_eval(cases, settings, out, read=again, model_factory=factory).ran == 0
    assert again.seen == [] and factory.built == []


def test_a_half_written_last_line_is_cut_and_redone(tmp_path):
    out = tmp_path / "results.jsonl"
    settings = [Setting("chain", "mock", 512)]
    run_eval(make_cases(2), settings, out, read=CountingRead(), model_factory=CountingFactory())
    whole = out.read_text(encoding="utf-8")
    out.write_text(whole[: len(whole) - 25], encoding="utf-8")  # killed while writing the second line
    read = CountingRead()
    run_eval(make_cases(2), settings, out, read=read, model_factory=CountingFactory())
    assert [s[0] for s in read.seen] == ["c1"]
    assert [l["case"] for l in lines_of(out)] == ["c0", "c1"]


def test_a_failing_case_is_recorded_and_the_run_goes_on(tmp_path):
    out = tmp_path / "results.jsonl"
    settings = [Setting("chain", "mock", 512)]
    read = CountingRead(fail={"c1"})
    summary = run_eval(make_cases(3), settings, out, read=read, model_factory=CountingFactory())
    lines = {l["case"]: l for l in lines_of(out)}
    assert summary.ran == 3 and summary.failed == 1
    assert lines["c1"]["error"] == "RuntimeError: the model fell over with a second line"
    assert lines["c1"]["score"] is None and lines["c2"]["score"] == 1.0
    # finished means finished: not run again, unless asked
    again = CountingRead()
    run_eval(make_cases(3), settings, out, read=again, model_factory=CountingFactory())
    assert again.seen == []
    run_eval(make_cases(3), settings, out, read=again, model_factory=CountingFactory(), retry_errors=True)
    assert again.seen == [("c1", "chain", 512)]


def test_a_bad_document_fails_its_cases_only(tmp_path):
    cases = [Case(id="gone", dataset="toy", question="q", path=str(tmp_path / "missing.txt"), answers=("x",)),
             *make_cases(1)]
    run_eval(cases, [Setting("chain", "mock", 512)], tmp_path / "r.jsonl", read=CountingRead(),
             model_factory=CountingFactory())
    gone, ok = lines_of(tmp_path / "r.jsonl")
    assert gone["error"].startswith("DocumentError: ") and "no such file" in gone["error"]
    assert ok["error"] is None


def test_the_model_is_built_once_per_model_and_kv(tmp_path):
    factory = CountingFactory()
    settings = settings_of(["chain", "rag"], ["mock", "mock:8"], [256, 512], ["full", "quant:4"])
    run_eval(make_cases(3), settings, tmp_path / "r.jsonl", read=CountingRead(), model_factory=factory)
    assert sorted(factory.built) == sorted((m, k) for m in ("mock", "mock:8") for k in ("full", "quant:4"))


def test_a_model_that_cannot_be_built_skips_its_cases_with_one_note(tmp_path):
    notes = []

    def factory(model, kv=None):
        if model == "broken":
            raise ValueError("no such model")
        return MockModel()

    settings = settings_of(["chain"], ["broken", "mock"], [512])
    summary = run_eval(make_cases(2), settings, tmp_path / "r.jsonl", read=CountingRead(), model_factory=factory,
                       on_note=notes.append)
    assert summary.models_failed == ["broken"] and summary.ran == 2
    assert notes == ["error: --model broken: no such model; its 2 case(s) are not run"]
    assert {l["model"] for l in lines_of(tmp_path / "r.jsonl")} == {"mock"}


def test_jobs_run_cases_at_once_on_api_and_local_models(tmp_path):
    """A local model's concurrent cases meet in its batcher (tests/test_engine_serving.py shows they decode
    together); --gpu-memory reaches local models only."""
    api = CountingRead(delay=0.05)
    api_factory = CountingFactory()
    run_eval(make_cases(6), [Setting("chain", "openai/gpt-4o-mini", 512)], tmp_path / "api.jsonl", jobs=3,
             read=api, model_factory=api_factory, gpu_memory=0.5)
    assert api.most_active > 1 and len(lines_of(tmp_path / "api.jsonl")) == 6
    assert api_factory.options == {}
    local = CountingRead(delay=0.05)
    local_factory = CountingFactory(local=True)
    run_eval(make_cases(4), [Setting("chain", "hf:/models/x", 512)], tmp_path / "local.jsonl", jobs=3,
             read=local, model_factory=local_factory, gpu_memory=0.5)
    assert local.most_active > 1 and len(lines_of(tmp_path / "local.jsonl")) == 4
    assert local_factory.options == {"gpu_memory": 0.5} and len(local_factory.built) == 1
    assert all(line["gpu_peak_bytes"] is None for line in lines_of(tmp_path / "local.jsonl"))  # no CUDA here


def test_limit_takes_the_first_cases(tmp_path):
    read = CountingRead()
    run_eval(make_cases(5), [Setting("chain", "mock", 512)], tmp_path / "r.jsonl", limit=2, read=read,
             model_factory=CountingFactory())
    assert [s[0] for s in read.seen] == ["c0", "c1"]


def test_results_file_keys_take_the_last_line(tmp_path):
    path = tmp_path / "r.jsonl"
    base = {"dataset": "d", "case": "a", "strategy": "chain", "model": "m", "window": 1, "kv": None}
    path.write_text(json.dumps({**base, "error": None}) + "\n" + json.dumps({**base, "error": "boom"}) + "\n")
    results = ResultsFile(path)
    assert len(results.finished()) == 1 and results.finished(retry_errors=True) == set()


def test_a_choice_question_shows_the_options_and_asks_for_the_letter():
    case = Case(id="q", dataset="d", question="What saved the steamer?", text="t", choices=CHOICES, answer="A")
    prompt = question_for(case)
    assert prompt == ("What saved the steamer?\n\n(A) a lamp\n(B) a boat\n(C) a gull\n\n"
                      + CHOICE_INSTRUCTION.format(letters="A, B or C"))
    plain = Case(id="p", dataset="d", question="Who?", text="t", answers=("Ada",))
    assert question_for(plain) == "Who?"
    assert question_for(Case(id="s", dataset="d", text="t", references=("r",))) is None
    assert choice_letter("(A) a lamp", CHOICES) == "A"


def test_unknown_strategies_are_refused_before_anything_runs():
    check_strategies(["chain"])
    with pytest.raises(ValueError, match="no-such-strategy"):
        check_strategies(["chain", "no-such-strategy"])


def test_the_real_read_path_on_a_mock_model(tmp_path):
    """read_case through longread.Reader, with the model string built by longread.backends.get_model."""
    text = " ".join(f"Sentence {i} tells of the harbour and its boats." for i in range(300))
    cases = [Case(id="q", dataset="toy", question="How many boats?", text=text, answers=("twelve",)),
             Case(id="s", dataset="toy", text=text, references=("the harbour and its boats",)),
             Case(id="m", dataset="toy", question="What?", text=text, choices=CHOICES, answer="B")]
    out = tmp_path / "r.jsonl"
    summary = run_eval(cases, [Setting("chain", "mock", 1024)], out, read=read_case)
    lines = {l["case"]: l for l in lines_of(out)}
    assert summary.failed == 0, [l["error"] for l in lines.values()]
    for line in lines.values():
        assert line["usage"]["calls"] == len(line["calls"]) > 1 and line["document_tokens"] > 1000
        assert {c["agent"] for c in line["calls"]} >= {"worker"} and line["model_name"] == "mock"
    assert 0.0 <= lines["s"]["score"] <= 1.0 and "rouge_l" in lines["s"]["metrics"]


@pytest.mark.parametrize("strategy", ["chain", "lookback", "multipath:paths=2", "truncate", "full"])
def test_every_strategy_through_the_harness(tmp_path, strategy):
    """The real read path per strategy, the model's replies routed by role: the final answer is what is scored."""
    text = " ".join(f"Sentence {i} tells of the harbour and its boats." for i in range(300))
    cases = [Case(id="q", dataset="toy", question="What opened the chest?", text=text, answers=("tazimklaen",)),
             Case(id="m", dataset="toy", question="What?", text=text, choices=CHOICES, answer="B")]

    def factory(model, kv=None):
        # One reply, routed by role, right for both cases: the choice (B), and the word the short answer holds.
        reply = "(B) a boat: the word was tazimklaen."
        # every worker finds a claim its part shows, so the grounded chain's manager gets to answer
        claim = 'Claim: The harbour had boats.\nQuote: "tells of the harbour and its boats"'
        return MockModel(replies={"worker": claim, "manager": reply, "reader": reply, "judge": reply})

    out = tmp_path / "r.jsonl"
    summary = run_eval(cases, [Setting(strategy, "mock", 8192)], out, model_factory=factory)
    lines = {l["case"]: l for l in lines_of(out)}
    assert summary.failed == 0, [l["error"] for l in lines.values()]
    assert lines["q"]["score"] == 1.0 and lines["m"]["score"] == 1.0 and lines["m"]["metrics"]["chosen"] == "B"
    assert all(l["strategy"] == strategy and l["usage"]["calls"] == len(l["calls"]) >= 1 for l in lines.values())


@pytest.mark.parametrize("terminal", [False, True])
def test_progress_on_stderr(tmp_path, terminal):
    import io

    from rich.console import Console

    from longread.cli.display.eval_progress import EvalProgress

    stream = io.StringIO()
    console = Console(file=stream, force_terminal=terminal, width=120, highlight=False)
    settings = [Setting("chain", "mock", 512)]
    run_eval(make_cases(1), settings, tmp_path / "r.jsonl", read=CountingRead(), model_factory=CountingFactory())
    progress = EvalProgress(0, console=console)
    with progress:
        run_eval(make_cases(3), settings, tmp_path / "r.jsonl", read=CountingRead(fail={"c2"}),
                 model_factory=CountingFactory(), progress=progress, on_note=progress.print)
    text = stream.getvalue()
    assert progress.total == 2 and progress.done == 2 and progress.errors == 1
    assert "resuming" in text and "1 of 3 already done" in text
    if terminal:
        assert "2/2" in text and "mean 0.000, 1 failed" in text
    else:
        assert "[1/2] c1 chain mock w512: score 0.000" in text and "[2/2] c2 chain mock w512: error RuntimeError" in text
