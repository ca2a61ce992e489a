"""Any hosted or self-served chat model through litellm: `openai/...`, `anthropic/...`, `ollama/...`, `hosted_vllm/...`.

What this module adds on top of `litellm.completion`:
- prompts counted with tiktoken (+ OpenAI's chat framing), so the shared window check runs before any request;
- retries on transient failures only (rate limits, timeouts, 5xx, dropped connections), with exponential backoff
  and jitter that honours Retry-After (tenacity); litellm's and the OpenAI SDK's own retries are off so only ours
  count;
- window and prices from litellm's bundled table only (never from a provider's server or the Hugging Face hub);
- a cap on calls in flight (one asyncio semaphore per event loop, one thread semaphore for sync calls), and one
  pause shared by every call after a rate limit (pacing.py), so documents read at once back off together;
- streaming (`on_text`): the text goes to the callback as the provider sends it, usage is still counted
  (`stream_options.include_usage`, then litellm's `stream_chunk_builder`), and a call is retried only until its
  first words arrived, since a retry would repeat text the reader has already seen;
- credentials kept out of repr, vars(), pickles, logs and error messages.

litellm is imported on first need: the import takes seconds and a model built with an explicit window for a dry
run never needs it. `longread._env` has already set LITELLM_LOCAL_MODEL_COST_MAP, so that import reads the price
table litellm ships instead of fetching it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import threading
import time
import weakref
from typing import Any, Iterable, Sequence

import tenacity

from ... import _env  # noqa: F401  (must run before litellm is imported: no price-table fetch)
from ...errors import ModelError
from ...tokenizers import tokenizer_for_api_model
from ..base import ChatModel, Completion, Message
from ..calls import Steps, Twin, adrive, drive
from .pacing import SharedPause

logger = logging.getLogger(__name__)

DEFAULT_CONTEXT_WINDOW = 8192  # for models litellm has no card for (e.g. a custom hosted_vllm name)

# OpenAI's chat framing: every message costs a few tokens around its content, and the reply is primed with 3.
# tiktoken counts can differ from other providers' tokenizers; the allowance keeps the estimate on the safe side.
TOKENS_PER_MESSAGE = 4
TOKENS_PER_REPLY = 3

# litellm exception classes (looked up by name: some are missing from older releases).
_TRANSIENT_ERRORS = (
    "RateLimitError",
    "Timeout",
    "APIConnectionError",
    "ServiceUnavailableError",
    "InternalServerError",
    "BadGatewayError",
)
# Retrying these cannot help; several subclass a transient-looking base, so they are checked first.
_PERMANENT_ERRORS = (
    "AuthenticationError",
    "PermissionDeniedError",
    "NotFoundError",
    "BadRequestError",  # ContextWindowExceededError, ContentPolicyViolationError, UnsupportedParamsError, ...
    "ContextWindowExceededError",
    "UnprocessableEntityError",
)

# Keyword arguments of litellm.completion that carry credentials: kept with the API key, never in vars().
_SECRET_KWARG_SUFFIXES = ("_key", "_token", "_secret", "_password", "credentials", "headers")
# Environment variables that hold credentials: a part of the name (between underscores) is one of these words, or
# the name ends in one (AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AZURE_API_KEY, HF_TOKEN, DB_PASSWORD, OPENAIKEY).
_SECRET_NAME_PARTS = frozenset({"KEY", "APIKEY", "SECRET", "TOKEN", "PASSWORD", "PASSWD", "PASSPHRASE", "CREDENTIAL",
                                "CREDENTIALS"})
_SECRET_NAME_ENDINGS = ("KEY", "TOKEN", "SECRET", "PASSWORD")
# Short words that name a credential only as the last part (DB_PASS, GITHUB_PAT, PROXY_AUTH): elsewhere in a name
# they are often something else (PASS_THROUGH, AUTH_METHOD).
_SECRET_LAST_PARTS = frozenset({"PASS", "PAT", "AUTH"})
_MIN_SECRET_LENGTH = 4  # shorter values would blank out ordinary text
_MIN_ENV_SECRET_LENGTH = 8  # a setting such as USE_KEY=true is not a key; credentials are long
DEFAULT_TIMEOUT_SECONDS = 120.0  # per attempt: a long answer fits, a stalled server costs two minutes
MAX_BACKOFF_SECONDS = 60.0

# Providers whose litellm.get_model_info asks a server (Ollama's /api/show, Lemonade's /models, the Hugging Face
# hub's config.json) instead of the bundled table: a window or price lookup must not touch the network.
_PROVIDERS_WITH_REMOTE_INFO = frozenset({"ollama", "ollama_chat", "lemonade", "huggingface"})


def _litellm() -> Any:
    """The litellm module, imported on first use."""
    import litellm

    # litellm prints provider lists and "Give Feedback" banners to stdout on errors; longread reports its own.
    litellm.suppress_debug_info = True
    return litellm


class _Credentials:
    """Credentials held outside the model's __dict__: their repr hides them and they refuse to be pickled."""

    __slots__ = ("_values",)

    def __init__(self, values: dict[str, Any]):
        self._values = dict(values)

    def as_kwargs(self) -> dict[str, Any]:
        return dict(self._values)

    def strings(self) -> list[str]:
        found: list[str] = []
        for value in self._values.values():
            if isinstance(value, str):
                found.append(value)
            elif isinstance(value, dict):  # headers
                found.extend(v for v in value.values() if isinstance(v, str))
        return found

    def __repr__(self) -> str:
        return f"<{len(self._values)} credential(s) hidden>"

    def __reduce__(self):
        raise TypeError("credentials are not picklable; a restored model reads them from the environment")


def _is_secret_kwarg(name: str) -> bool:
    name = name.lower()
    return name == "api_key" or name.endswith(_SECRET_KWARG_SUFFIXES)


def is_secret_name(name: str) -> bool:
    """Whether an environment variable's name says it holds a credential (see _SECRET_NAME_PARTS)."""
    name = name.upper()
    parts = re.split(r"[^A-Z0-9]+", name)
    return (name.endswith(_SECRET_NAME_ENDINGS) or any(part in _SECRET_NAME_PARTS for part in parts)
            or parts[-1] in _SECRET_LAST_PARTS)


def secret_env_values(environ: dict[str, str] | None = None) -> list[str]:
    """Values of environment variables that hold credentials (is_secret_name), at least 8 characters long."""
    environ = os.environ if environ is None else environ
    return [v for k, v in environ.items() if is_secret_name(k) and len(v) >= _MIN_ENV_SECRET_LENGTH]


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret replaced by ***; longest first, so a secret containing another goes whole."""
    for secret in sorted({s for s in secrets if s and len(s) >= _MIN_SECRET_LENGTH}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def retry_after_seconds(error: BaseException | None) -> float:
    """The wait a rate-limited response asks for (Retry-After, or OpenAI's retry-after-ms), in seconds; 0 if none."""
    for headers in (getattr(error, "headers", None), getattr(getattr(error, "response", None), "headers", None)):
        lowered = {str(k).lower(): v for k, v in (headers or {}).items()}
        try:
            if "retry-after-ms" in lowered:
                return max(0.0, float(lowered["retry-after-ms"]) / 1000)
            if "retry-after" in lowered:
                return max(0.0, float(lowered["retry-after"]))
        except (TypeError, ValueError):  # an HTTP date: rare enough to leave to our own backoff
            pass
    return 0.0


class _BackoffHonouringRetryAfter(tenacity.wait.wait_base):
    """Exponential backoff from `base` seconds plus up to `base` of jitter, never shorter than the server's
    Retry-After, capped at a minute."""

    def __init__(self, base: float):
        self._exponential = tenacity.wait_exponential_jitter(initial=base, max=MAX_BACKOFF_SECONDS, jitter=base)

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        return min(max(self._exponential(retry_state), retry_after_seconds(error)), MAX_BACKOFF_SECONDS)


def connection_refused(error: BaseException) -> bool:
    """The server's address answered that nothing listens there (litellm reports it as an InternalServerError or
    an APIConnectionError; the cause underneath is the socket's ConnectionRefusedError)."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ConnectionRefusedError):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def is_transient(error: BaseException) -> bool:
    """True for failures a later attempt can fix: rate limits, timeouts, 5xx, dropped connections. Not a refused
    connection: nothing listens at that address (a server that is not started), and waiting will not start it."""
    if connection_refused(error):
        return False
    litellm = _litellm()
    permanent = tuple(getattr(litellm, name) for name in _PERMANENT_ERRORS if hasattr(litellm, name))
    if isinstance(error, permanent):
        return False
    transient = tuple(getattr(litellm, name) for name in _TRANSIENT_ERRORS if hasattr(litellm, name))
    if isinstance(error, transient):
        return True
    # A generic litellm.APIError (or a raw OpenAI SDK error) that carries a 429 / 5xx status.
    import openai

    status = getattr(error, "status_code", None)
    return isinstance(error, openai.APIError) and isinstance(status, int) and (status == 429 or status >= 500)


def is_rate_limit(error: BaseException) -> bool:
    """A 429: the provider asks for fewer requests (not a timeout or a 5xx, which concern one call)."""
    limited = getattr(_litellm(), "RateLimitError", None)
    return (limited is not None and isinstance(error, limited)) or getattr(error, "status_code", None) == 429


class StreamInterrupted(Exception):
    """A stream that failed after its first words were delivered: not retried (the words cannot be taken back)."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


def _delta(chunk: Any) -> str:
    choices = getattr(chunk, "choices", None) or []
    delta = getattr(choices[0], "delta", None) if choices else None
    return getattr(delta, "content", None) or ""


class _Stream:
    """One attempt's streamed reply: each piece goes to `on_text` as it comes, the chunks are kept for litellm's
    `stream_chunk_builder` (usage included). A failure after the first piece was delivered leaves the block as
    StreamInterrupted, which is not retried."""

    def __init__(self, litellm: Any, on_text: Any, messages: list[Message]):
        self.litellm = litellm
        self.on_text = on_text
        self.messages = messages
        self.chunks: list[Any] = []
        self.delivered = False

    def add(self, chunk: Any) -> None:
        self.chunks.append(chunk)
        piece = _delta(chunk)
        if piece:
            self.delivered = True
            self.on_text(piece)

    def built(self) -> Any:
        return self.litellm.stream_chunk_builder(self.chunks, messages=self.messages)

    def __enter__(self) -> "_Stream":
        return self

    def __exit__(self, kind: Any, error: BaseException | None, traceback: Any) -> bool:
        if isinstance(error, Exception) and self.delivered:
            raise StreamInterrupted(error) from error
        return False


class _Attempts:
    """One call's request and its attempts: how many were made (for the error message) and when the first was
    sent (for the seconds)."""

    def __init__(self, litellm: Any, request: dict[str, Any], on_text: Any):
        self.litellm = litellm
        self.request = request
        self.on_text = on_text
        self.attempts = 0
        self.first_sent: float | None = None

    def count(self) -> None:
        self.attempts += 1

    def started(self) -> dict[str, Any]:
        """The request, as it is sent (the clock starts at the first one)."""
        self.first_sent = self.first_sent or time.perf_counter()
        return self.request

    def stream(self) -> _Stream:
        return _Stream(self.litellm, self.on_text, self.request["messages"])

    def seconds(self) -> float:
        return time.perf_counter() - (self.first_sent or time.perf_counter())


_UNKNOWN = object()  # not asked yet


class LiteLLMModel(ChatModel):
    """A litellm model string as a ChatModel (see the module docstring for what it adds to litellm)."""

    streams = True  # takes on_text
    accepts_response_format = True  # passed to litellm, which drops it for providers that have no JSON mode

    def __init__(
        self,
        model: str,
        *,
        context_window: int | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        max_retries: int = 6,
        max_concurrency: int = 8,
        api_key: str | None = None,
        api_base: str | None = None,
        retry_wait: float | tenacity.wait.wait_base = 1.0,
        **litellm_kwargs: Any,
    ):
        """
        - `context_window`: tokens per call; default: litellm's model card (`max_input_tokens`), else 8192.
        - `timeout`: seconds per attempt; `max_retries`: attempts in all (1: no retry).
        - `max_concurrency`: calls in flight at once, per event loop for async calls and per model for sync ones.
        - `api_key` / `api_base`: passed to litellm; without a key, litellm reads the provider's env var.
        - `retry_wait`: the base in seconds of the exponential backoff (doubling per attempt, plus jitter, at
          least the server's Retry-After, at most 60 s; 0: retry at once, for tests), or a tenacity wait strategy.
        - other keyword arguments go to every litellm call (e.g. `mock_response="hi"`, `api_version=...`).
          litellm's `drop_params` is on unless given, so a provider that rejects `temperature` still answers.
        """
        if max_retries < 1:
            raise ValueError(f"max_retries counts attempts and must be at least 1, got {max_retries}")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        if not math.isfinite(timeout) or timeout <= 0:
            raise ValueError(f"timeout must be a positive, finite number of seconds, got {timeout}")
        if context_window is not None and context_window < 1:
            raise ValueError(f"context_window must be positive, got {context_window}")
        for owned in ("num_retries", "max_retries", "timeout", "model", "messages", "max_tokens", "temperature"):
            if owned in litellm_kwargs:
                raise ValueError(f"{owned!r} is set by LiteLLMModel itself; pass it as a LiteLLMModel argument")

        self.name = model
        self._tiktoken = tokenizer_for_api_model(model)
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.max_concurrency = int(max_concurrency)
        self.api_base = api_base
        self.retry_wait = retry_wait
        secrets = {k: v for k, v in litellm_kwargs.items() if _is_secret_kwarg(k)}
        if api_key is not None:
            secrets["api_key"] = api_key
        self._credentials = _Credentials(secrets)
        self.litellm_kwargs = {"drop_params": True} | {k: v for k, v in litellm_kwargs.items() if k not in secrets}
        self._context_window = context_window
        self._prices: tuple[float, float] | None = None
        self._init_slots()

    def _init_slots(self) -> None:
        self._served_model: Any = _UNKNOWN  # what the --api-base server says of the model (backends/served.py)
        self._served_lock = threading.Lock()
        self._thread_slots = threading.BoundedSemaphore(self.max_concurrency)
        # asyncio semaphores bind to the loop that first waits on them: one per loop, forgotten with the loop.
        self._loop_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        self._loop_slots_lock = threading.Lock()
        self._pause = SharedPause()

    # -- pickling: no credentials, no locks --------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in ("_credentials", "_thread_slots", "_loop_slots", "_loop_slots_lock", "_pause", "_served_model",
                     "_served_lock"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._credentials = _Credentials({})
        self._init_slots()

    # -- model facts -------------------------------------------------------------------------------------------

    @property
    def context_window(self) -> int:  # type: ignore[override]  (resolved on first need: it imports litellm)
        if self._context_window is None:
            served = self._served()
            self._context_window = int((served.window if served is not None else None)
                                       or self._model_info().get("max_input_tokens") or DEFAULT_CONTEXT_WINDOW)
        return self._context_window

    @property
    def tokenizer(self) -> Any:  # type: ignore[override]
        """The server's own tokenizer when `--api-base` is a `longread serve` that lists one, else tiktoken."""
        served = self._served()
        return served.tokenizer if served is not None and served.tokenizer is not None else self._tiktoken

    def _served(self) -> Any:
        """What the --api-base server says of this model (its window, its tokenizer), asked once; None without
        --api-base or when it says nothing."""
        if self._served_model is _UNKNOWN:
            with self._served_lock:
                if self._served_model is _UNKNOWN:
                    from ..served import discover

                    key = self._credentials.as_kwargs().get("api_key") or os.environ.get("OPENAI_API_KEY")
                    self._served_model = (discover(self.api_base, self.name, key, self.timeout)
                                          if self.api_base else None)
        return self._served_model

    def _model_info(self) -> dict[str, Any]:
        provider = self.name.split("/", 1)[0].lower() if "/" in self.name else ""
        if provider in _PROVIDERS_WITH_REMOTE_INFO:
            return {}
        try:
            return dict(_litellm().get_model_info(self.name))
        except Exception:  # litellm raises for models it has no card for; that is not an error here
            return {}

    def price_per_token(self) -> tuple[float, float]:
        if self._prices is None:
            info = self._model_info()
            self._prices = (float(info.get("input_cost_per_token") or 0.0), float(info.get("output_cost_per_token") or 0.0))
        return self._prices

    def count_prompt_tokens(self, messages: Sequence[Message], cache_prefix: int | None = None) -> int:
        tokenizer = self.tokenizer
        if tokenizer is not self._tiktoken:  # the server's tokenizer and chat template: its own count, exactly
            prefix, rest = tokenizer.encode_chat(messages, cache_prefix if self.api_base else None)
            return len(prefix) + len(rest)
        return sum(tokenizer.count(m.get("content") or "") + TOKENS_PER_MESSAGE for m in messages) + TOKENS_PER_REPLY

    # -- calls -------------------------------------------------------------------------------------------------

    # One call is written once (`_calling`: the request, the retries, the error, the reply); only an attempt has a
    # sync and an async form, which differ in how they wait (a thread semaphore or the loop's, the shared pause)
    # and how they call litellm (`completion` or `acompletion`, `for` or `async for` over a stream).
    def _complete(self, messages, max_new_tokens, temperature, prompt_tokens, cache_prefix, on_text=None,
                  response_format=None, **extra) -> Completion:
        return drive(self._calling(messages, max_new_tokens, temperature, prompt_tokens, cache_prefix, on_text,
                                   response_format))

    async def _acomplete(self, messages, max_new_tokens, temperature, prompt_tokens, cache_prefix, on_text=None,
                         response_format=None, **extra) -> Completion:
        return await adrive(self._calling(messages, max_new_tokens, temperature, prompt_tokens, cache_prefix, on_text,
                                          response_format))

    def _calling(self, messages, max_new_tokens, temperature, prompt_tokens, cache_prefix, on_text, response_format
                 ) -> Steps[Completion]:
        """One call with its retries (backends/calls.py: `drive` or `adrive` runs it)."""
        call = _Attempts(_litellm(), self._request(messages, max_new_tokens, temperature, stream=on_text is not None,
                                                   cache_prefix=cache_prefix, response_format=response_format),
                         on_text)
        try:
            response = yield Twin(lambda: self._retrying(tenacity.Retrying)(self._attempt, call),
                                  lambda: self._retrying(tenacity.AsyncRetrying)(self._aattempt, call))
        except Exception as error:
            raise self._model_error(error, call.attempts) from None
        return self._parse(response, prompt_tokens, call.seconds())

    def _attempt(self, call: _Attempts) -> Any:
        call.count()
        with self._thread_slots:
            self._pause.wait()
            response = call.litellm.completion(**call.started())
            if call.on_text is None:
                return response
            with call.stream() as stream:
                for chunk in response:
                    stream.add(chunk)
            return stream.built()

    async def _aattempt(self, call: _Attempts) -> Any:
        call.count()
        async with self._async_slots():
            await self._pause.await_()
            response = await call.litellm.acompletion(**call.started())
            if call.on_text is None:
                return response
            with call.stream() as stream:
                async for chunk in response:
                    stream.add(chunk)
            return stream.built()

    def _async_slots(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        with self._loop_slots_lock:
            slots = self._loop_slots.get(loop)
            if slots is None:
                slots = self._loop_slots[loop] = asyncio.Semaphore(self.max_concurrency)
            return slots

    def _request(self, messages: list[Message], max_new_tokens: int, temperature: float,
                 stream: bool = False, cache_prefix: int | None = None,
                 response_format: dict[str, Any] | None = None) -> dict[str, Any]:
        """Keyword arguments of one litellm call. Holds the credentials: it lives only for the call."""
        request = dict(self.litellm_kwargs)
        request.update(self._credentials.as_kwargs())
        if self.api_base is not None:
            request["api_base"] = self.api_base
            if cache_prefix:
                # A self-hosted server: `longread serve` keeps the KV of this question-independent prefix (a header,
                # so no other server can refuse the request for it; vLLM finds shared prefixes by itself).
                from ..served import CACHE_PREFIX_HEADER

                request["extra_headers"] = {**request.get("extra_headers", {}), CACHE_PREFIX_HEADER: str(cache_prefix)}
        request.update(
            model=self.name,
            messages=list(messages),
            max_tokens=max_new_tokens,
            temperature=temperature,
            timeout=self.timeout,
            num_retries=0,  # litellm's retry wrapper
            max_retries=0,  # the OpenAI SDK client's own retries, which litellm would otherwise set to 2
        )
        if stream:
            request.update(stream=True, stream_options={"include_usage": True})
        if response_format is not None:
            request["response_format"] = response_format
        return request

    def _retrying(self, retrying_class: type[tenacity.BaseRetrying]) -> tenacity.BaseRetrying:
        wait = self.retry_wait
        if not isinstance(wait, tenacity.wait.wait_base):
            wait = _BackoffHonouringRetryAfter(float(wait))
        return retrying_class(
            stop=tenacity.stop_after_attempt(self.max_retries),
            wait=wait,
            retry=tenacity.retry_if_exception(is_transient),
            before_sleep=self._log_retry,
            reraise=True,
        )

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        if error is not None and is_rate_limit(error):
            self._pause.hold(wait)  # every call of this model waits it out, not only this one
        # The class name only: provider messages can echo request details.
        logger.warning(
            "%s: %s on attempt %d of %d, retrying in %.1f s",
            self.name, type(error).__name__, state.attempt_number, self.max_retries, wait,
        )

    def _secrets(self) -> list[str]:
        return self._credentials.strings() + secret_env_values()

    def _model_error(self, error: Exception, attempts: int) -> ModelError:
        interrupted = isinstance(error, StreamInterrupted)
        if interrupted:
            error = error.error  # type: ignore[assignment]
        if connection_refused(error):
            where = self.api_base or "the provider's address"
            hint = " is `longread serve` (or your server) running there?" if self.api_base else ""
            return ModelError(f"{self.name}: nothing is listening at {where} (connection refused; not retried):{hint}",
                              model=self.name, error_type="ConnectionRefusedError", attempts=attempts)
        kind = type(error).__name__
        why = "gave up after" if is_transient(error) and not interrupted else "not retried, after"
        if interrupted:
            why = "the stream broke after its first words; not retried, after"
        detail = scrub(str(error), self._secrets())
        if len(detail) > 500:
            detail = detail[:500] + "..."
        message = f"{self.name}: {kind} ({why} {attempts} attempt{'s' if attempts != 1 else ''}): {detail}"
        return ModelError(message, model=self.name, error_type=kind, attempts=attempts)

    def _parse(self, response: Any, prompt_tokens: int, seconds: float) -> Completion:
        choice = response.choices[0]
        text = getattr(choice.message, "content", None) or ""
        usage = getattr(response, "usage", None)
        reported_prompt = getattr(usage, "prompt_tokens", None)
        reported_completion = getattr(usage, "completion_tokens", None)
        prompt = int(reported_prompt) if reported_prompt is not None else prompt_tokens
        completion = int(reported_completion) if reported_completion is not None else self.tokenizer.count(text)
        details = getattr(usage, "prompt_tokens_details", None)
        cached = getattr(details, "cached_tokens", None) or 0
        finish = getattr(choice, "finish_reason", None) or "stop"
        return Completion(
            text=text,
            prompt_tokens=prompt,
            completion_tokens=completion,
            seconds=seconds,
            cost_usd=self._cost(response, prompt, completion),
            finish_reason="length" if finish in ("length", "max_tokens") else finish,
            cached_prompt_tokens=int(cached),
        )

    def _cost(self, response: Any, prompt_tokens: int, completion_tokens: int) -> float:
        try:
            cost = _litellm().completion_cost(completion_response=response)
            if cost is not None:
                return float(cost)
        except Exception:  # no price for this model (or provider-specific pricing litellm cannot compute)
            pass
        price_in, price_out = self.price_per_token()
        return prompt_tokens * price_in + completion_tokens * price_out
