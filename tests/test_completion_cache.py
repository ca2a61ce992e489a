"""The completion cache (backends/cache.py): keyed by model, prompt and sampling settings, opt-in (`cache=`,
`--cache`); a re-run with the same settings makes no model call, and `longread runs` shows the hits."""

from __future__ import annotations

import json
import pickle
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import longread
from longread.backends.cache import CachedModel, CompletionCache, cache_key
from longread.cli import app
from longread.testing import MockModel

REPO = Path(__file__).resolve().parents[1]
STORY = REPO / "examples" / "lighthouse_keeper.md"
MESSAGES = [{"role": "system", "content": "You read."}, {"role": "user", "content": "Who kept the lamp?"}]


@pytest.fixture(autouse=True)
def isolated(cli_isolated, monkeypatch):
    monkeypatch.delenv("LONGREAD_TRACE_OTEL", raising=False)
    monkeypatch.delenv("LONGREAD_CACHE", raising=False)


# -- the key ----------------------------------------------------------------------------------------------------------
call_settings = st.fixed_dictionaries({
    "messages": st.lists(st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]),
                                                "content": st.text(max_size=30)}), min_size=1, max_size=3),
    "max_new_tokens": st.integers(1, 4096),
    "temperature": st.sampled_from([0.0, 0.3, 0.7, 1.0]),
    "response_format": st.sampled_from([None, {"type": "json_object"}]),
})


def model_with(name="m", kv=None, api_base=None):
    model = MockModel(name=name)
    if kv is not None:
        model.kv = kv  # the local engine's public attribute
    if api_base is not None:
        model.api_base = api_base
    return model


@settings(max_examples=80, deadline=None)
@given(a=call_settings, b=call_settings)
def test_the_key_is_equal_exactly_when_every_setting_that_shapes_a_reply_is(a, b):
    model = model_with()
    same = cache_key(model, **a) == cache_key(model, **b)
    assert same == (a == b)


@pytest.mark.parametrize("other", [model_with(name="m2"), model_with(kv="snapkv:256"),
                                   model_with(api_base="http://127.0.0.1:9/v1")])
def test_the_key_changes_with_the_model_and_its_settings(other):
    assert cache_key(model_with(), MESSAGES, 64, 0.0) != cache_key(other, MESSAGES, 64, 0.0)


def test_what_does_not_shape_a_reply_is_not_in_the_key():
    model = CachedModel(MockModel(), CompletionCache(":memory:"))
    model.complete(MESSAGES, 16, window=1000, cache_prefix=5)
    again = model.complete(MESSAGES, 16, window=5000, cache_prefix=None)
    assert again.cache_hit and len(model.inner.calls) == 1


# -- the wrapper ------------------------------------------------------------------------------------------------------
def test_a_second_identical_call_is_answered_from_sqlite_without_the_model(tmp_path):
    path = tmp_path / "completions.sqlite"
    inner = MockModel(price=(1e-6, 2e-6))
    first = CachedModel(inner, path).complete(MESSAGES, 16)
    fresh = CachedModel(inner, path)  # another run: a new connection to the same file
    pieces: list[str] = []
    again = fresh.complete(MESSAGES, 16, on_text=pieces.append)
    assert len(inner.calls) == 1 and (fresh.hits, fresh.misses) == (1, 0)
    assert again.text == first.text and "".join(pieces) == first.text
    assert (again.prompt_tokens, again.completion_tokens) == (first.prompt_tokens, first.completion_tokens)
    assert again.cache_hit and not first.cache_hit and again.cost_usd == 0.0 < first.cost_usd
    fresh.complete(MESSAGES, 17)  # another cap: another key
    assert len(inner.calls) == 2


def test_the_cache_never_stores_the_prompt_or_a_key(tmp_path):
    from longread.backends.litellm.model import LiteLLMModel

    path = tmp_path / "completions.sqlite"
    secret = "sk-test-0123456789abcdef"
    model = CachedModel(LiteLLMModel("openai/gpt-4o-mini", api_key=secret, mock_response="Ada kept it."), path)
    assert model.complete(MESSAGES, 16).text == "Ada kept it."
    assert model.complete(MESSAGES, 16).cache_hit
    model.cache.close()
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir())  # the database, and its WAL if one is left
    assert secret.encode() not in stored and b"Who kept the lamp?" not in stored and b"Ada kept it." in stored


def test_a_damaged_cache_file_is_a_warning_and_the_call_goes_to_the_model(tmp_path, caplog):
    path = tmp_path / "completions.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    inner = MockModel()
    model = CachedModel(inner, path)
    with caplog.at_level("WARNING", logger="longread"):
        first = model.complete(MESSAGES, 16)
        model.complete(MESSAGES, 16)
    assert not first.cache_hit and len(inner.calls) == 2
    warnings = [r for r in caplog.records if "completion cache" in r.getMessage()]
    assert len(warnings) == 1 and str(path) in warnings[0].getMessage()


def test_the_wrapper_is_the_model_to_everyone_who_asks(tmp_path):
    inner = MockModel(name="mock", context_window=3000)
    model = CachedModel(inner, tmp_path / "c.sqlite")
    assert (model.name, model.context_window, model.stand_in, model.tokenizer) == ("mock", 3000, True, inner.tokenizer)
    assert model.count_prompt_tokens(MESSAGES) == inner.count_prompt_tokens(MESSAGES)


def test_a_cached_model_pickles_without_its_connection(tmp_path):
    from longread.backends.litellm.model import LiteLLMModel

    model = CachedModel(LiteLLMModel("openai/gpt-4o-mini", api_key="sk-unused", mock_response="Ada."),
                        tmp_path / "c.sqlite")
    model.complete(MESSAGES, 8)
    restored = pickle.loads(pickle.dumps(model))
    assert restored.complete(MESSAGES, 8).cache_hit and restored.cache.path == model.cache.path


def test_async_calls_use_the_cache_too(tmp_path):
    import asyncio

    inner = MockModel()
    model = CachedModel(inner, tmp_path / "c.sqlite")
    first = asyncio.run(model.acomplete(MESSAGES, 16))
    again = asyncio.run(model.acomplete(MESSAGES, 16))
    assert again.cache_hit and again.text == first.text and len(inner.calls) == 1


# -- the API ----------------------------------------------------------------------------------------------------------
def test_a_rerun_through_the_api_makes_no_model_call(tmp_path):
    model = MockModel()
    path = tmp_path / "completions.sqlite"
    first = longread.ask(STORY, "Who kept the lamp?", model=model, window=1024, strategy="chain", cache=path)
    calls = len(model.calls)
    again = longread.ask(STORY, "Who kept the lamp?", model=model, window=1024, strategy="chain", cache=path)
    assert len(model.calls) == calls and again.answer == first.answer
    assert again.usage.cache_hits == again.usage.calls == calls and first.usage.cache_hits == 0
    assert again.to_dict()["usage"]["cache_hits"] == calls
    longread.ask(STORY, "Who kept the lamp?", model=model, window=1200, strategy="chain", cache=path)
    assert len(model.calls) > calls  # another window: other segments, other prompts


def test_cache_true_uses_the_user_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGREAD_CACHE_DIR", str(tmp_path / "cache"))
    reader = longread.Reader(STORY, model=MockModel(), window=1024, cache=True)
    assert isinstance(reader.model, CachedModel)
    assert reader.model.cache.path == tmp_path / "cache" / "workspace" / "completions.sqlite"


def test_ask_many_shares_one_cache_and_passes_the_schema(tmp_path):
    model = MockModel(replies={"formatter": '{"keeper": "Ada"}'})
    first, again = longread.ask_many([STORY, STORY], "Who?", model=model, jobs=1, window=1024, strategy="chain",
                                     cache=tmp_path / "c.sqlite", schema={"type": "object"})
    assert first.data == again.data == {"keeper": "Ada"}
    assert first.usage.cache_hits == 0 and again.usage.cache_hits == again.usage.calls == len(model.calls)


# -- the command line -------------------------------------------------------------------------------------------------
def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_cli_cache_rerun_makes_no_call_and_runs_shows_the_hits(tmp_path):
    """`--force` starts the run over (no checkpoint answers it), so only the cache can spare the calls."""
    args = ["ask", STORY, "Who kept the lamp?", "--model", "mock", "--window", "1024", "--json", "--cache"]
    first = json.loads(invoke(*args).stdout)
    assert " hits " not in invoke("runs").stdout  # no run used the cache yet: the narrow table keeps its room
    again = json.loads(invoke(*args, "--force").stdout)
    assert first["usage"]["cache_hits"] == 0 and len(first["calls"]) > 1
    assert again["usage"]["cache_hits"] == len(again["calls"]) == len(first["calls"])
    assert all(c["cache_hit"] for c in again["calls"]) and again["answer"] == first["answer"]
    plain = json.loads(invoke(*args[:-1], "--force").stdout)  # without --cache: the model is called
    assert plain["usage"]["cache_hits"] == 0
    logged = [json.loads(line) for line in invoke("runs", "--json").stdout.splitlines()]
    assert [r["cache_hits"] for r in logged] == [0, len(first["calls"]), 0]  # newest first
    table = invoke("runs").stdout
    assert f"{len(first['calls'])}/{len(first['calls'])}" in table
    shown = invoke("runs", "show", str(logged[1]["id"])).stdout
    assert f"({len(first['calls'])} from the completion cache)" in shown


def test_a_runs_log_of_an_older_release_gains_the_hits_column(tmp_path):
    from longread.cli.run.runlog import RunLog, RunRecord

    path = tmp_path / "runs.sqlite"
    with sqlite3.connect(path) as conn:  # the table as the first release made it
        conn.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, started REAL NOT NULL, seconds REAL "
                     "NOT NULL, command TEXT NOT NULL, document TEXT NOT NULL, question TEXT, model TEXT NOT NULL, "
                     "strategy TEXT, window INTEGER, kv TEXT, status TEXT NOT NULL, error TEXT, segments INTEGER NOT "
                     "NULL DEFAULT 0, calls INTEGER NOT NULL DEFAULT 0, prompt_tokens INTEGER NOT NULL DEFAULT 0, "
                     "completion_tokens INTEGER NOT NULL DEFAULT 0, cost_usd REAL NOT NULL DEFAULT 0, output TEXT, "
                     "result TEXT)")
        conn.execute("INSERT INTO runs (started, seconds, command, document, model, status) VALUES "
                     "(1, 2, 'ask', 'old.txt', 'mock', 'done')")
    conn.close()
    log = RunLog(path)
    log.add(RunRecord(started=3, seconds=1, command="ask", document="new.txt", model="mock", status="done",
                      calls=4, cache_hits=4))
    assert [(r.document, r.cache_hits) for r in log.recent()] == [("new.txt", 4), ("old.txt", 0)]
