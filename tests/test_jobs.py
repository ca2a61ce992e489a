"""`--jobs N`: documents read at once against a fake OpenAI-compatible server that counts requests in flight.

The cap on calls in flight holds across documents and multipath's paths; a 429 pauses every document; a 429 storm
loses and repeats no note; outcomes come in the documents' order; Ctrl-C keeps finished work."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

import longread.backends
from longread.backends.litellm.model import LiteLLMModel
from longread.cli import app, with_optional_values
from longread.cli.run.parallel import DaemonPool
from longread.cli.settings import DEFAULT_API_JOBS, Settings
from longread.serve.fake import FakeProvider
from longread.testing import MockModel

PARAGRAPH = "The keeper wrote the weather in the log each night, and the ships that passed, and the lamp's oil. "


@pytest.fixture(autouse=True)
def isolated(cli_isolated, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def folder(tmp_path: Path, count: int, paragraphs: int = 8) -> Path:
    root = tmp_path / "books"
    root.mkdir()
    for i in range(count):
        body = "\n\n".join(f"Night {n} of log {i}. " + PARAGRAPH * 2 for n in range(paragraphs))
        (root / f"log{i:02d}.md").write_text(f"# Log {i}\n\n{body}", encoding="utf-8")
    return root


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def summaries(out: Path) -> dict[str, str]:
    return {p.name: json.loads(p.read_text())["summary"] for p in sorted(out.glob("*.summary.json"))}


def test_the_call_cap_is_never_exceeded_across_documents_and_paths(tmp_path):
    """4 documents at once, each reading 3 paths at once: 12 chains, but never more than the 8 calls in flight of
    the one shared cap, as the server counts them."""
    books = folder(tmp_path, 4, paragraphs=4)
    with FakeProvider(latency=0.05) as server:
        result = invoke("summarize", books, "--out", tmp_path / "out", "--model", "openai/fake", "--api-base",
                        server.base_url, "--window", "512", "--strategy", "multipath", "--jobs", "4")
        assert result.exit_code == 0, result.output
        assert 4 < server.peak_in_flight <= 8  # more than one call per document, never more than the cap
    assert len(summaries(tmp_path / "out")) == 4


def test_jobs_beyond_the_default_cap_raise_it():
    jobs16 = Settings("summarize", "openai/fake", None, None, "chain", jobs=16)
    assert jobs16.model_options()["max_concurrency"] == 16
    assert "max_concurrency" not in Settings("summarize", "openai/fake", None, None, "chain").model_options()
    assert Settings("summarize", "openai/fake", None, None, "chain").workers() == DEFAULT_API_JOBS
    assert Settings("summarize", "local", None, None, "chain").workers() == 1  # one forward pass at a time
    assert Settings("summarize", "mock", None, None, "chain").workers() == 1


def test_outputs_with_jobs_are_those_of_a_sequential_run_in_the_same_order(tmp_path):
    books = folder(tmp_path, 5)
    with FakeProvider(latency=0.02) as server:
        runs = {}
        for jobs in (1, 4):
            result = invoke("summarize", books, "--out", tmp_path / f"out{jobs}", "--model", "openai/fake",
                            "--api-base", server.base_url, "--window", "512", "--jobs", jobs, "--json",
                            "--workspace", tmp_path / f"ws{jobs}")
            assert result.exit_code == 0, result.output
            runs[jobs] = [json.loads(line)["source"] for line in result.stdout.splitlines()]
    assert runs[4] == runs[1] == sorted(runs[1])
    assert summaries(tmp_path / "out4") == summaries(tmp_path / "out1")


def test_a_rate_limit_pauses_every_document(tmp_path):
    """One 429 with Retry-After: 0.6 s; no request of any document may arrive until that pause has passed."""
    books = folder(tmp_path, 4, paragraphs=12)
    with FakeProvider(latency=0.02, rate_limit=lambda n: 0.6 if n == 6 else None) as server:
        result = invoke("summarize", books, "--out", tmp_path / "out", "--model", "openai/fake", "--api-base",
                        server.base_url, "--window", "512", "--jobs", "4")
        assert result.exit_code == 0, result.output
        limited = next(a for a in server.arrivals if a.status == 429)
        after = [a.at - limited.answered_at for a in server.arrivals if a.at > limited.answered_at]
    # Without the shared pause the other three documents would send a request every few milliseconds (dozens in
    # the pause); with it, none starts until the pause is over. Each of the three may have had one request past
    # the check already, which a loaded machine can deliver late, so at most three arrive inside the pause.
    during = [t for t in after if 0.1 < t < 0.55]
    assert after and len(during) <= 3, during
    assert len(after) > 10


def test_a_429_storm_over_many_jobs_loses_and_repeats_no_note(tmp_path, monkeypatch):
    """Every third request is refused; each document's notes, summary and calls are those of a calm run."""
    books = folder(tmp_path, 6)
    model_options = {}

    def fast_retries(model, **options):  # the CLI's model, with a backoff of milliseconds instead of seconds
        options.pop("kv", None)
        model_options.update(options)
        return LiteLLMModel(model, retry_wait=0.01, max_retries=8, api_key="no-key", **options)

    monkeypatch.setattr(longread.backends, "get_model", fast_retries)
    with FakeProvider(latency=0.01) as calm:
        assert invoke("summarize", books, "--out", tmp_path / "calm", "--model", "openai/fake", "--api-base",
                      calm.base_url, "--window", "512", "--jobs", "1", "--workspace", tmp_path / "ws1").exit_code == 0
        calm_prompts = sorted(json.dumps(a.body["messages"]) for a in calm.answered)
    with FakeProvider(latency=0.01, rate_limit=lambda n: 0.02 if n % 3 == 0 else None) as storm:
        result = invoke("summarize", books, "--out", tmp_path / "storm", "--model", "openai/fake", "--api-base",
                        storm.base_url, "--window", "512", "--jobs", "6", "--workspace", tmp_path / "ws6")
        assert result.exit_code == 0, result.output
        storm_prompts = sorted(json.dumps(a.body["messages"]) for a in storm.answered)
        assert sum(a.status == 429 for a in storm.arrivals) >= len(storm_prompts) // 3
    assert storm_prompts == calm_prompts  # every call answered exactly once, with the notes it should carry
    assert summaries(tmp_path / "storm") == summaries(tmp_path / "calm")
    assert model_options["api_base"] == storm.base_url


@pytest.mark.integration  # a real SIGINT to this process
def test_ctrl_c_keeps_finished_documents_and_the_rerun_reads_only_the_rest(tmp_path, monkeypatch):
    books = folder(tmp_path, 6, paragraphs=3)
    calls = {"n": 0, "stopped": False}
    lock = threading.Lock()

    gone = threading.Event()

    def interrupt_in_the_middle(call):
        with lock:
            stopped = calls["stopped"]
            if not stopped:
                calls["n"] += 1
                if calls["n"] == 9:  # Ctrl-C, in the middle of the run: documents read before it are finished
                    calls["stopped"] = True
                    os.kill(os.getpid(), signal.SIGINT)
        if stopped:
            # The documents in flight stop at their next call, as a killed process would; they wait until the main
            # thread has taken the Ctrl-C (on a loaded machine their error could otherwise reach it first).
            gone.wait(10)
            raise RuntimeError("the process is gone")
        return None

    model = MockModel(replies={"worker": interrupt_in_the_middle, "manager": interrupt_in_the_middle})
    monkeypatch.setattr(longread.backends, "get_model", lambda *a, **k: model)
    first = invoke("summarize", books, "--out", tmp_path / "out", "--model", "mock", "--jobs", "2")
    assert first.exit_code == 130 and "Finished work is kept" in first.output
    kept = summaries(tmp_path / "out")
    assert 0 < len(kept) < 6
    gone.set()
    for thread in threading.enumerate():  # the first run's documents in flight end before the rerun starts
        if thread.name.startswith("longread-job-"):
            thread.join(10)
    calls["stopped"] = False
    second = invoke("summarize", books, "--out", tmp_path / "out", "--model", "mock", "--jobs", "2")
    assert second.exit_code == 0, second.output
    assert second.output.count("skipped") == len(kept)
    assert len(summaries(tmp_path / "out")) == 6


def test_the_pool_hands_results_and_errors_back_in_order():
    pool = DaemonPool(lambda n: 1 / n, [4, 2, 0, 1], workers=3)
    results = pool.results()
    assert [next(results), next(results)] == [0.25, 0.5]
    with pytest.raises(ZeroDivisionError):
        next(results)


@pytest.mark.parametrize(("args", "expected"), [
    (["summarize", "books", "--ray"], ["summarize", "books", "--ray", "auto"]),
    (["summarize", "--ray", "--out", "o", "b"], ["summarize", "--ray", "auto", "--out", "o", "b"]),
    (["summarize", "b", "--ray", "ray://head:10001"], ["summarize", "b", "--ray", "ray://head:10001"]),
    (["ask", "--", "--ray"], ["ask", "--", "--ray"]),
])
def test_a_bare_ray_option_means_auto(args, expected):
    assert with_optional_values(args) == expected


def test_the_async_api_reads_many_documents_at_once_in_order(tmp_path):
    import asyncio

    import longread
    from longread.errors import DocumentError

    root = folder(tmp_path, 4, paragraphs=4)
    sources = sorted(root.glob("*.md"))
    sources.insert(2, tmp_path / "missing.md")
    with FakeProvider(latency=0.05) as server:
        results = asyncio.run(longread.aask_many(sources, "What did the keeper write?", model="openai/fake",
                                                 api_base=server.base_url, window=512, jobs=3))
        assert 1 < server.peak_in_flight <= 3
    assert isinstance(results[2], DocumentError) and "missing.md" in str(results[2])
    done = [r for i, r in enumerate(results) if i != 2]
    assert [Path(r.source).name for r in done] == [s.name for s in sources if s.name != "missing.md"]
    assert all(r.answer for r in done)
