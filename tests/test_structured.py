"""Structured answers (longread/structured.py): `schema=` in the API and `--schema` on `ask` give the answer as an
object, validated, retried once with the validation error; a bad schema is refused before any call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from typer.testing import CliRunner

import longread
from longread.cli import app
from longread.results import ReadEvent
from longread.structured import (
    SchemaError, StructuredOutputError, as_schema, complete_json, load_schema, parse_json, with_instruction,
)
from longread.testing import MockModel

REPO = Path(__file__).resolve().parents[1]
STORY = REPO / "examples" / "lighthouse_keeper.md"
KEEPER_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "years": {"type": "integer"}},
                 "required": ["name", "years"]}


class Keeper(BaseModel):
    name: str
    years: int


def replies(*texts: str):
    """A formatter reply function giving `texts` in turn (the last one again after that)."""
    given_texts = list(texts)

    def reply(call):
        return given_texts.pop(0) if len(given_texts) > 1 else given_texts[0]

    return reply


@pytest.fixture(autouse=True)
def isolated(cli_isolated, monkeypatch):
    monkeypatch.delenv("LONGREAD_TRACE_OTEL", raising=False)
    monkeypatch.delenv("LONGREAD_CACHE", raising=False)


# -- replies ----------------------------------------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(value=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
       before=st.sampled_from(["", "Here it is: ", "```json\n", "Sure.\n```\n"]),
       after=st.sampled_from(["", "\n```", " Hope this helps.", "\n```\nDone."]))
def test_parse_json_finds_the_object_in_words_and_fences(value, before, after):
    assert parse_json(before + json.dumps(value) + after) == value


@pytest.mark.parametrize("text", ["", "no json here", "{'single': 'quotes'}", "{\"open\": "])
def test_parse_json_refuses_a_reply_without_json(text):
    with pytest.raises(ValueError, match="not JSON"):
        parse_json(text)


# -- schemas ----------------------------------------------------------------------------------------------------------
def test_a_pydantic_model_validates_into_an_instance_and_a_dict_schema_into_the_value():
    assert as_schema(Keeper).validate({"name": "Ada", "years": 40}) == Keeper(name="Ada", years=40)
    assert as_schema(KEEPER_SCHEMA).validate({"name": "Ada", "years": 40}) == {"name": "Ada", "years": 40}
    with pytest.raises(ValueError, match="years"):
        as_schema(Keeper).validate({"name": "Ada"})
    with pytest.raises(ValueError, match="'years' is a required property"):
        as_schema(KEEPER_SCHEMA).validate({"name": "Ada"})


def test_bad_schemas_are_refused_with_the_reason(tmp_path):
    with pytest.raises(SchemaError, match="not a valid JSON schema"):
        as_schema({"type": "no such type"})
    with pytest.raises(SchemaError, match="pydantic model class"):
        as_schema("a string")
    with pytest.raises(SchemaError, match="nor a file that exists"):
        load_schema(str(tmp_path / "missing.json"))
    broken = tmp_path / "broken.json"
    broken.write_text('{"type": "object",\n "properties": }', encoding="utf-8")
    with pytest.raises(SchemaError, match=r"broken.json: not JSON \(line 2"):
        load_schema(str(broken))
    good = tmp_path / "keeper.json"
    good.write_text(json.dumps(KEEPER_SCHEMA), encoding="utf-8")
    assert load_schema(str(good)).json_schema == KEEPER_SCHEMA == load_schema(json.dumps(KEEPER_SCHEMA)).json_schema


# -- one JSON call -----------------------------------------------------------------------------------------------------
MESSAGES = [{"role": "user", "content": "Who kept the lamp, and for how long?"}]


def test_a_reply_that_matches_takes_one_call():
    model = MockModel(replies={"formatter": '{"name": "Ada", "years": 40}'})
    completions, value = complete_json(model, MESSAGES, Keeper, 64)
    assert value == Keeper(name="Ada", years=40) and len(completions) == len(model.calls) == 1
    assert model.calls[0].agent == "formatter"


def test_a_reply_that_misses_is_retried_once_with_the_validation_error():
    model = MockModel(replies={"formatter": replies('{"name": "Ada"}', '{"name": "Ada", "years": 40}')})
    completions, value = complete_json(model, MESSAGES, KEEPER_SCHEMA, 64)
    assert value == {"name": "Ada", "years": 40} and len(completions) == 2
    retry = model.calls[1].messages
    assert retry[:-2] == MESSAGES and retry[-2] == {"role": "assistant", "content": '{"name": "Ada"}'}
    assert "'years' is a required property" in retry[-1]["content"]


def test_a_reply_that_copies_the_schema_is_told_so_and_the_prompt_names_the_fields_to_fill():
    """What the embedded 135M model does with a schema: it writes the schema back (without `required`)."""
    echo = json.dumps({k: v for k, v in KEEPER_SCHEMA.items() if k != "required"})
    model = MockModel(replies={"formatter": replies(echo, '{"name": "Ada", "years": 40}')})
    schema = as_schema(KEEPER_SCHEMA)
    complete_json(model, with_instruction([{"role": "system", "content": "You read."}, *MESSAGES], schema), schema, 64)
    first, retry = model.calls
    assert "Fill in its fields: name (string), years (integer)" in first.messages[0]["content"]
    assert "repeats the schema" in retry.messages[-1]["content"]


def test_two_misses_raise_with_the_last_reply_and_the_calls_made():
    model = MockModel(replies={"formatter": replies("I think it was Ada.", '{"name": 3, "years": 40}')})
    with pytest.raises(StructuredOutputError, match="did not match the schema") as caught:
        complete_json(model, MESSAGES, Keeper, 64)
    assert caught.value.reply == '{"name": 3, "years": 40}' and len(caught.value.completions) == 2
    assert len(model.calls) == 2


def test_no_retry_when_it_would_not_fit_the_window():
    model = MockModel(replies={"formatter": "x " * 60})
    first = model.count_prompt_tokens(MESSAGES) + 64  # room for the first call only
    with pytest.raises(StructuredOutputError, match="no room in the window to retry"):
        complete_json(model, MESSAGES, Keeper, 64, window=first + 10)
    assert len(model.calls) == 1


# -- the API ----------------------------------------------------------------------------------------------------------
def test_ask_with_a_pydantic_schema_fills_result_data_after_the_strategy_answer():
    model = MockModel(replies={"reader": "Ada kept the lamp for forty years.",
                               "formatter": '```json\n{"name": "Ada", "years": 40}\n```'})
    events: list[ReadEvent] = []
    reader = longread.Reader(STORY, model=model, window=8192, strategy="full")  # one `reader` call: the answer
    result = reader.ask("Who kept the lamp?", schema=Keeper, on_event=events.append)
    assert result.data == Keeper(name="Ada", years=40) and result.answer == "Ada kept the lamp for forty years."
    assert [c.agent for c in result.calls] == ["reader", "formatter"]
    prompt = model.calls_by("formatter")[0].messages[-1]["content"]
    assert "Ada kept the lamp for forty years." in prompt and '"years"' in prompt  # the answer and the schema
    assert result.to_dict()["data"] == {"name": "Ada", "years": 40}
    assert [(e.kind, e.agent) for e in events][-2:] == [("call_started", "formatter"), ("call_finished", "formatter")]


def test_ask_without_a_schema_makes_no_formatter_call_and_has_no_data():
    model = MockModel()
    result = longread.ask(STORY, "Who kept the lamp?", model=model, window=2048)
    assert result.data is None and "data" not in result.to_dict() and not model.calls_by("formatter")


def test_a_failed_structured_answer_keeps_the_answer_and_every_call():
    model = MockModel(replies={"reader": "Ada.", "formatter": "not JSON at all"})
    with pytest.raises(StructuredOutputError) as caught:
        longread.ask(STORY, "Who kept the lamp?", model=model, window=8192, schema=KEEPER_SCHEMA, strategy="full")
    kept = caught.value.result
    assert kept is not None and kept.answer == "Ada." and kept.data is None
    assert [c.agent for c in kept.calls].count("formatter") == 2 and len(kept.calls) == len(model.calls)


def test_a_bad_schema_fails_before_any_call():
    model = MockModel()
    with pytest.raises(SchemaError):
        longread.ask(STORY, "Who kept the lamp?", model=model, window=2048, schema={"type": 7})
    assert model.calls == []


def test_aask_and_summarize_take_a_schema_too():
    import asyncio

    model = MockModel(replies={"formatter": '{"name": "Ada", "years": 40}'})
    answer = asyncio.run(longread.aask(STORY, "Who?", model=model, window=2048, schema=Keeper))
    summary = longread.summarize(STORY, model=model, window=2048, schema=KEEPER_SCHEMA)
    assert answer.data == Keeper(name="Ada", years=40) and summary.data == {"name": "Ada", "years": 40}
    assert "Summary:" in model.calls_by("formatter")[-1].messages[-1]["content"]


def test_the_formatter_prompt_keeps_room_for_its_reply_and_a_retry():
    """A long set of notes is cut so that the first call and a retry (quoting the first reply) both fit."""
    from longread.structured import RETRY_RESERVE_TOKENS, as_schema, formatter_messages, json_cap

    model = MockModel()
    result = longread.ask(STORY, "Who?", model=model, window=2048)
    from dataclasses import replace

    long = replace(result, notes="lamp " * 5000)
    cap = json_cap(2048)
    messages = formatter_messages(model, long, as_schema(Keeper), 2048, cap)
    assert model.count_prompt_tokens(messages) + cap + cap + RETRY_RESERVE_TOKENS <= 2048
    assert "lamp lamp" in messages[-1]["content"]  # some of the notes, not none


# -- the command line -------------------------------------------------------------------------------------------------
def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_cli_refuses_a_bad_schema_in_one_line_before_anything_loads(tmp_path):
    broken = tmp_path / "schema.json"
    broken.write_text("{nope", encoding="utf-8")
    result = invoke("ask", STORY, "Who?", "--model", "mock", "--schema", broken)
    assert result.exit_code == 2 and f"{broken}: not JSON (line 1" in result.output
    assert "Traceback" not in result.output


def test_cli_dry_run_counts_the_formatter_and_its_retry():
    plain = json.loads(invoke("ask", STORY, "Who?", "--model", "mock", "--dry-run", "--json", "-w", "2048").stdout)
    shaped = json.loads(invoke("ask", STORY, "Who?", "--model", "mock", "--dry-run", "--json", "-w", "2048",
                               "--schema", json.dumps(KEEPER_SCHEMA)).stdout)
    assert [c["agent"] for c in shaped["calls"]] == [c["agent"] for c in plain["calls"]] + ["formatter"] * 2
    assert shaped["estimate"]["calls"] == plain["estimate"]["calls"] + 2


def test_cli_schema_through_longread_serve_prints_the_object(tmp_path):
    """`ask --schema` against `longread serve` (a mock engine): litellm sends the response_format, the server
    checks the engine's reply and retries it, the client checks it again and prints the object."""
    from longread.serve.fake import FakeProvider

    schema_file = tmp_path / "keeper.json"
    schema_file.write_text(json.dumps(KEEPER_SCHEMA), encoding="utf-8")
    with FakeProvider() as provider:
        provider.model.replies = {"formatter": replies("Ada, forty years.", '{"name": "Ada", "years": 40}')}
        args = ["ask", STORY, "Who kept the lamp?", "--model", "openai/fake", "--api-base", provider.base_url,
                "--window", "2048", "--schema", schema_file]
        text = invoke(*args)
        assert text.exit_code == 0, text.output
        assert json.loads(text.stdout.split("\n\n")[0]) == {"name": "Ada", "years": 40}
        sent = [a.body for a in provider.answered if a.body.get("response_format")]
        assert sent and sent[-1]["response_format"]["json_schema"]["schema"] == KEEPER_SCHEMA
        data = json.loads(invoke(*args, "--json").stdout)
        assert data["data"] == {"name": "Ada", "years": 40} and data["calls"][-1]["agent"] == "formatter"
