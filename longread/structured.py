"""Structured answers: a reply that must be JSON matching a schema (a JSON schema, or a pydantic model).

    schema = as_schema(Person)                           # or a dict: {"type": "object", "properties": ...}
    completions, value = complete_json(model, messages, schema, max_new_tokens=256)
    result = structure_result(model, result, schema, window=W)    # Reader.ask(question, schema=...)

Every JSON call asks three ways at once, so it works on every backend: the schema goes in the prompt (the local
engine has nothing else), as OpenAI's `response_format` to the backends that pass it on (litellm, which translates
it per provider), and the reply is validated here (jsonschema, or the pydantic model's own validation). A reply that
is not JSON or does not match gets one retry that shows the model its reply and what is wrong with it; a second
miss raises StructuredOutputError, which keeps the answer read so far (`.result`).

A question with a schema is answered by the strategy as usual (its prompts, streaming and checkpoints are
untouched), then one `formatter` call writes that answer, with the notes it rests on, as JSON for the schema. The
`formatter` calls are in `Result.calls`; the object is `Result.data`. `longread serve` uses `complete_json` for
requests with a `response_format` (serve/app.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Sequence

from .backends.base import CallTag, ChatModel, Completion, Message
from .backends.calls import Call, Steps, adrive, drive
from .errors import LongreadError, WindowExceeded
from .tokenizers import truncate_to_tokens

if TYPE_CHECKING:
    from .results import Result

FORMATTER = CallTag("formatter")
RETRY_RESERVE_TOKENS = 200  # the retry's note on what was wrong, beside the first reply it quotes
ERROR_CHARS = 600  # what a retry (or an error message) quotes of a validation error

SYSTEM = ("You write answers about a document as JSON. Use only what the answer and the notes below say. Reply with "
          "one JSON value that matches the JSON schema: no prose, no code fence.")


class SchemaError(LongreadError, ValueError):
    """The schema itself is unusable (not JSON, not a JSON schema, a file that cannot be read)."""


class StructuredOutputError(LongreadError):
    """The model's reply was not JSON matching the schema, twice. `reply` is its last reply, `completions` the
    calls made (paid for); `result` (for a read document) the answer the strategy wrote, with every call made."""

    def __init__(self, message: str, reply: str = "", completions: Sequence[Completion] = (),
                 result: "Result | None" = None):
        super().__init__(message)
        self.reply = reply
        self.completions = list(completions)
        self.result = result


@dataclass(frozen=True)
class OutputSchema:
    """A schema checked once: its JSON schema, the pydantic model it came from (if any) and a name for it."""

    json_schema: dict[str, Any]
    model: type | None = None
    name: str = "answer"

    def validate(self, value: Any) -> Any:
        """The value as the caller wants it (a pydantic instance for a model), or ValueError saying what is wrong."""
        if self.model is not None:
            from pydantic import ValidationError

            try:
                return self.model.model_validate(value)  # type: ignore[attr-defined]
            except ValidationError as exc:
                raise ValueError("; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}"
                                           for e in exc.errors()[:3])) from None
        import jsonschema

        validator = jsonschema.validators.validator_for(self.json_schema)(self.json_schema)
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.path))
        if errors:
            raise ValueError("; ".join(f"{'/'.join(str(p) for p in e.path) or '(top)'}: {e.message}"
                                       for e in errors[:3]))
        return value

    def response_format(self) -> dict[str, Any]:
        """OpenAI's response_format for this schema (not strict: strict mode refuses many ordinary schemas)."""
        if self.json_schema == {"type": "object"}:
            return {"type": "json_object"}
        return {"type": "json_schema", "json_schema": {"name": self.name, "schema": self.json_schema, "strict": False}}

    def text(self) -> str:
        return json.dumps(self.json_schema, ensure_ascii=False, separators=(",", ":"))


def _name(raw: Any) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "_", str(raw or "")).strip("_")[:64]
    return cleaned or "answer"


def as_schema(schema: Any) -> OutputSchema:
    """An OutputSchema from a JSON schema (a dict), a pydantic model class, or an OutputSchema; SchemaError when
    it is none of these or not a valid JSON schema."""
    if isinstance(schema, OutputSchema):
        return schema
    if isinstance(schema, type) and hasattr(schema, "model_json_schema"):
        return OutputSchema(schema.model_json_schema(), schema, _name(schema.__name__))  # type: ignore[attr-defined]
    if not isinstance(schema, dict):
        raise SchemaError(f"a schema is a JSON schema (a dict) or a pydantic model class, not {type(schema).__name__}")
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        raise SchemaError(f"not a valid JSON schema: {exc.message}" + (f" (at {where})" if where else "")) from None
    return OutputSchema(schema, None, _name(schema.get("title")))


def load_schema(spec: str) -> OutputSchema:
    """`--schema`: JSON text, or the path of a file holding it. SchemaError names the file and the reason."""
    text = spec.strip()
    if text.startswith(("{", "[")):
        source = "the schema"
    else:
        path = Path(spec).expanduser()
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SchemaError(f"{spec}: neither JSON (a schema starts with {{) nor a file that exists") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SchemaError(f"{path}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{source}: not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    try:
        return as_schema(schema)
    except SchemaError as exc:
        raise SchemaError(f"{source}: {exc}") from None


# -- replies ------------------------------------------------------------------------------------------------------
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


def parse_json(text: str) -> Any:
    """The JSON value of a reply: the whole text, else a fenced block, else the first value that starts at a { or
    [ (small models wrap JSON in words or fences whatever they are told). ValueError when there is none."""
    stripped = text.strip()
    try:
        return json.loads(stripped)
    except json.JSONDecodeError:
        pass
    for block in _FENCE.findall(stripped):
        try:
            return json.loads(block.strip())
        except json.JSONDecodeError:
            continue
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[\[{]", stripped):
        try:
            value, _ = decoder.raw_decode(stripped, match.start())
            return value
        except json.JSONDecodeError:
            continue
    raise ValueError("the reply is not JSON")


def checked(schema: OutputSchema, text: str) -> Any:
    """The validated value of a reply, or ValueError saying what is wrong."""
    value = parse_json(text)
    if _echoes(schema, value):
        raise ValueError("the reply repeats the schema instead of an object that fills in its fields")
    return schema.validate(value)


def _echoes(schema: OutputSchema, value: Any) -> bool:
    """Whether a reply is (a copy of) the schema rather than a value: small models copy what they are shown."""
    properties = schema.json_schema.get("properties")
    return (isinstance(value, dict) and isinstance(value.get("properties"), dict) and isinstance(properties, dict)
            and "properties" not in properties and set(value["properties"]) <= set(properties))


def fields(schema: OutputSchema) -> str:
    """`reason (string), year (integer, optional)` for an object schema with properties, else "": small models
    given only a schema tend to copy it back; named fields to fill in steer them to the object itself."""
    properties = schema.json_schema.get("properties")
    if schema.json_schema.get("type") != "object" or not isinstance(properties, dict) or not properties:
        return ""
    required = set(schema.json_schema.get("required") or ())
    parts = []
    for name, spec in properties.items():
        kind = spec.get("type", "value") if isinstance(spec, dict) else "value"
        kind = "/".join(kind) if isinstance(kind, list) else str(kind)
        parts.append(f"{name} ({kind}{'' if name in required else ', optional'})")
    return ", ".join(parts)


def instruction(schema: OutputSchema) -> str:
    if schema.json_schema == {"type": "object"}:
        return "Reply with one JSON object and nothing else: no prose, no code fence."
    named = fields(schema)
    fill = f" Fill in its fields: {named}; do not repeat the schema." if named else ""
    return ("Reply with one JSON value that matches this JSON schema, and nothing else (no prose, no code fence)."
            f"{fill}\n{schema.text()}")


def with_instruction(messages: Sequence[Message], schema: OutputSchema) -> list[Message]:
    """A client's messages (`longread serve`) with the JSON instruction in the system message (one is added)."""
    out = [dict(m) for m in messages]
    if out and out[0]["role"] == "system":
        out[0]["content"] = f"{out[0]['content']}\n\n{instruction(schema)}"
    else:
        out.insert(0, {"role": "system", "content": instruction(schema)})
    return out  # type: ignore[return-value]


def retry_messages(messages: Sequence[Message], reply: str, error: str, model: ChatModel, cap: int
                   ) -> list[Message]:
    """The first messages, the model's reply (at most `cap` tokens of it) and what is wrong with it."""
    return [*messages, {"role": "assistant", "content": truncate_to_tokens(reply, model.tokenizer, cap)},
            {"role": "user", "content": f"That reply does not match the schema: {error[:ERROR_CHARS]}\n"
                                        "Reply again with only the corrected JSON."}]


def json_steps(model: ChatModel, messages: Sequence[Message], schema: OutputSchema, max_new_tokens: int, *,
               temperature: float = 0.0, window: int | None = None, tag: CallTag = FORMATTER,
               on_call: Callable[[str, Completion | None], None] | None = None, caller: Any = None
               ) -> Steps[tuple[list[Completion], Any]]:
    """The calls of a JSON answer, written once for the sync and the async caller (backends/calls.py): the first,
    and one retry when its reply does not match; returns (completions, value). `caller` makes the calls instead of
    the model (an object with `complete` / `acomplete`: serve's queue)."""
    messages = list(messages)

    def call(prompt: list[Message]) -> Steps[Completion]:
        if on_call is not None:
            on_call("started", None)
        completion = yield Call(caller or model, prompt, max_new_tokens, temperature, window=window, tag=tag,
                                response_format=schema.response_format())
        if on_call is not None:
            on_call("finished", completion)
        return completion

    first = yield from call(messages)  # a first call that does not fit raises WindowExceeded
    try:
        return [first], checked(schema, first.text)
    except ValueError as exc:
        error = str(exc)
    try:
        second = yield from call(retry_messages(messages, first.text, error, model, max_new_tokens))
    except WindowExceeded:
        raise _failed(error, first.text, [first], "no room in the window to retry") from None
    try:
        return [first, second], checked(schema, second.text)
    except ValueError as exc:
        raise _failed(str(exc), second.text, [first, second]) from None


def _failed(error: str, reply: str, completions: list[Completion], why: str = "twice") -> StructuredOutputError:
    return StructuredOutputError(f"the model's reply did not match the schema ({why}): {error[:ERROR_CHARS]}",
                                 reply, completions)


def complete_json(model: ChatModel, messages: Sequence[Message], schema: Any, max_new_tokens: int, *,
                  temperature: float = 0.0, window: int | None = None, tag: CallTag = FORMATTER,
                  on_call: Callable[[str, Completion | None], None] | None = None) -> tuple[list[Completion], Any]:
    """(the completions made, the validated value): one call, and one retry when its reply does not match.
    `on_call("started" | "finished", completion)` around each call (progress events)."""
    return drive(json_steps(model, messages, as_schema(schema), max_new_tokens, temperature=temperature,
                            window=window, tag=tag, on_call=on_call))


class _Queued:
    """A call made by `complete(messages)` (serve's queue) in place of the model's own."""

    def __init__(self, complete: Callable[[list[Message]], Awaitable[Completion]]):
        self._complete = complete

    async def acomplete(self, messages: Sequence[Message], *args: Any, **options: Any) -> Completion:
        return await self._complete(list(messages))


async def acomplete_json(model: ChatModel, messages: Sequence[Message], schema: Any, max_new_tokens: int, *,
                         temperature: float = 0.0, window: int | None = None, tag: CallTag = FORMATTER,
                         on_call: Callable[[str, Completion | None], None] | None = None,
                         complete: Callable[[list[Message]], Awaitable[Completion]] | None = None
                         ) -> tuple[list[Completion], Any]:
    """The async twin of complete_json. `complete(messages)` makes the call instead of the model (serve's queue)."""
    return await adrive(json_steps(model, messages, as_schema(schema), max_new_tokens, temperature=temperature,
                                   window=window, tag=tag, on_call=on_call,
                                   caller=_Queued(complete) if complete is not None else None))


# -- a read document's answer as JSON -----------------------------------------------------------------------------
def json_cap(window: int) -> int:
    """max_new_tokens of a formatter call: an eighth of the window, 256 to 1024 (JSON repeats the field names, so
    it runs longer than the prose answer it restates)."""
    return max(256, min(1024, window // 8))


def formatter_messages(model: ChatModel, result: "Result", schema: OutputSchema, window: int, cap: int
                       ) -> list[Message]:
    """The formatter's prompt: the question, the answer, as much of the notes as leaves room for the reply and a
    retry, and the schema."""
    label = "Summary" if result.mode == "summary" else "Answer"
    head = f"Question: {result.question}\n\n" if result.question else ""
    named = fields(schema)
    fill = f" Fill in its fields: {named}; do not repeat the schema." if named else ""
    tail = (f"\n\nJSON schema:\n{schema.text()}\n\nWrite the {label.lower()} as JSON that matches the schema.{fill}")

    def messages(notes: str) -> list[Message]:
        evidence = f"\n\nNotes from reading the document:\n{notes}" if notes else ""
        return [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"{head}{label}: {result.text.strip()}{evidence}{tail}"}]

    notes = result.notes.strip()
    if notes:
        spare = window - cap - (cap + RETRY_RESERVE_TOKENS) - model.count_prompt_tokens(messages("")) - 16
        notes = truncate_to_tokens(notes, model.tokenizer, spare) if spare > 0 else ""
    return messages(notes)


def _events(result: "Result", cap: int, on_event: Any) -> Callable[[str, Completion | None], None] | None:
    """complete_json's on_call as the ReadEvents of a `formatter` call (progress, `--verbose`)."""
    if on_event is None:
        return None
    from .results import CallRecord, ReadEvent

    def on_call(kind: str, completion: Completion | None) -> None:
        record = CallRecord.of("formatter", None, completion, cap) if completion is not None else None
        event_kind: Any = f"call_{kind}"  # call_started | call_finished
        on_event(ReadEvent(event_kind, "formatter", None, result.segments, record, result.source))

    return on_call


def _with_data(result: "Result", completions: Sequence[Completion], value: Any, cap: int) -> "Result":
    from .results import CallRecord

    records = [CallRecord.of("formatter", None, c, cap) for c in completions]
    return replace(result, calls=[*result.calls, *records], data=value)


def structuring(model: ChatModel, result: "Result", schema: Any, *, window: int, on_event: Any = None
                ) -> Steps["Result"]:
    """`result` with `data` (the validated object) and the formatter calls added to its calls. On a second miss,
    StructuredOutputError with `.result`: the answer and every call made, the formatter's too. Written once for
    `structure_result` and `astructure_result` (backends/calls.py)."""
    schema = as_schema(schema)
    cap = json_cap(window)
    messages = formatter_messages(model, result, schema, window, cap)
    try:
        completions, value = yield from json_steps(model, messages, schema, cap, window=window,
                                                   on_call=_events(result, cap, on_event))
    except StructuredOutputError as exc:
        exc.result = _with_data(result, exc.completions, None, cap)
        if getattr(model, "upper_bound", False):
            return exc.result  # a dry run's stand-in: it takes the retry, and its calls are the estimate
        raise
    return _with_data(result, completions, value, cap)


def structure_result(model: ChatModel, result: "Result", schema: Any, *, window: int, on_event: Any = None
                     ) -> "Result":
    return drive(structuring(model, result, schema, window=window, on_event=on_event))


async def astructure_result(model: ChatModel, result: "Result", schema: Any, *, window: int, on_event: Any = None
                            ) -> "Result":
    return await adrive(structuring(model, result, schema, window=window, on_event=on_event))
