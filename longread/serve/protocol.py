"""The request and reply shapes of OpenAI's chat completions API that `longread serve` speaks.

Only what a chat client sends to a text model is modelled; unknown fields are accepted and ignored (as vLLM does),
fields that would change the meaning of a reply and that the engine cannot honour (`n` > 1, tools) are refused with
a clear 400. `response_format` (json_object, json_schema) is honoured: see serve/app.py.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# The X-Longread-Cache-Prefix header these requests may carry: backends/served.py (CACHE_PREFIX_HEADER).


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        """The content as one string; text parts are joined by newlines (as vLLM joins them)."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        kinds = {part.type for part in self.content} - {"text"}
        if kinds:
            raise RequestError(f"messages: only text content is supported, not {', '.join(sorted(kinds))}",
                               param="messages")
        return "\n".join(part.text or "" for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    name: str = "answer"
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")  # `schema` would shadow BaseModel's
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    tools: list[Any] | None = None
    response_format: ResponseFormat | None = None

    def check(self) -> None:
        if self.n != 1:
            raise RequestError(f"n: longread serve writes one choice per request, got n={self.n}", param="n")
        if self.tools:
            raise RequestError("tools: longread serve has no tool calling", param="tools")

    def cap(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def chat_messages(self) -> list[dict[str, str]]:
        """The messages for the engine; with a JSON response_format, the system message says so (and gives the
        schema), since the local engine has no constrained decoding (longread/structured.py)."""
        # `developer` is OpenAI's newer name for the system role; chat templates know only `system`.
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in self.messages]
        schema = self.output_schema()
        if schema is None:
            return messages
        from ..structured import with_instruction

        return with_instruction(messages, schema)  # type: ignore[arg-type,return-value]

    def output_schema(self) -> Any:
        """The structured.OutputSchema the reply must match (`json_object`: any object), or None for text."""
        fmt = self.response_format
        if fmt is None or fmt.type == "text":
            return None
        from ..structured import OutputSchema, SchemaError, as_schema

        if fmt.type == "json_object":
            return OutputSchema({"type": "object"})
        if fmt.json_schema is None or fmt.json_schema.schema_ is None:
            raise RequestError("response_format: json_schema needs json_schema.schema", param="response_format")
        try:
            schema = as_schema(fmt.json_schema.schema_)
        except SchemaError as exc:
            raise RequestError(f"response_format: {exc}", param="response_format") from None
        return OutputSchema(schema.json_schema, None, fmt.json_schema.name)


class RequestError(Exception):
    """A request the server refuses, with OpenAI's error body."""

    def __init__(self, message: str, *, status: int = 400, kind: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message, self.status, self.kind, self.param, self.code = message, status, kind, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(prompt: int, completion: int, cached: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


def finish(reason: str) -> str:
    """The engine's finish reasons in OpenAI's words (a repetition the guard cut is a stop)."""
    return "length" if reason == "length" else "stop"


def reply(ident: str, model: str, text: str, reason: str, prompt: int, completion: int, cached: int
          ) -> dict[str, Any]:
    return {
        "id": ident, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish(reason),
                     "logprobs": None}],
        "usage": usage(prompt, completion, cached),
    }


def chunk(ident: str, model: str, created: int, delta: dict[str, Any] | None, reason: str | None = None,
          usage_: dict[str, Any] | None = None) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}]
    data: dict[str, Any] = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                            "choices": choices}
    if usage_ is not None:
        data["usage"] = usage_
    return data
