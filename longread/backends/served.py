"""What a self-hosted server says about the model it serves, so that its clients plan with its own numbers.

`longread serve` counts a prompt with the model's tokenizer and chat template; a client counting with tiktoken
plans segments the server then finds over the window (issue 20: `--window 4096` on a book failed at its first
call). So the server lists, in `/v1/models`, the window it checks (`max_model_len`, vLLM's field, which vLLM
sends too) and, when it can, the tokenizer it counts with (`"tokenizer": {"name": ...}`, its files at
`/v1/tokenizer`). `discover` reads both; LiteLLMModel (with --api-base) then takes that window as its default and
counts every prompt exactly as the server will (HFTokenizer.encode_chat, the cache prefix cut included).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

DISCOVERY_TIMEOUT_SECONDS = 10.0

# Not an OpenAI header: the number of characters at the start of the last message that do not depend on the
# question (longread's worker prompts are [system][segment][notes][question]). With it the engine keeps the KV of
# that prefix (compressed by its --kv policy) and the next request with the same prefix prefills only the rest.
# A header rather than a body field, so a client sending it to any other server can never be refused for it.
# Sent by LiteLLMModel with --api-base, read by `longread serve` (serve/protocol.py).
CACHE_PREFIX_HEADER = "X-Longread-Cache-Prefix"


@dataclass(frozen=True)
class ServedModel:
    """The server's window (None: it did not say) and tokenizer (an HFTokenizer; None: count as before)."""

    window: int | None
    tokenizer: Any = None


def served_name(model: str) -> str:
    """The name the server knows: the model string without its litellm provider (`openai/local` -> `local`)."""
    return model.split("/", 1)[1] if "/" in model else model


def discover(api_base: str, model: str, api_key: str | None = None,
             timeout: float = DISCOVERY_TIMEOUT_SECONDS) -> ServedModel | None:
    """The server's card of `model`, or None when it has none (or cannot be reached: the first call then says why).
    A tokenizer it advertises but that cannot be used is a warning, and the count stays tiktoken's."""
    import httpx

    from ..tokenizers import MAX_EXPORT_CHARS

    name, base = served_name(model), api_base.rstrip("/")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        with httpx.Client(timeout=min(timeout, DISCOVERY_TIMEOUT_SECONDS), headers=headers) as client:
            cards = _bounded_json(client, f"{base}/models", 1 << 20).get("data") or []
            card = next((c for c in cards if isinstance(c, dict) and c.get("id") == name), None)
            if card is None:
                return None
            window = card.get("max_model_len")
            window = window if isinstance(window, int) and window > 0 else None
            if not isinstance(card.get("tokenizer"), dict):
                return ServedModel(window)
            export = _bounded_json(client, f"{base}/tokenizer", 2 * MAX_EXPORT_CHARS)  # JSON escapes grow it
    except (httpx.HTTPError, ValueError, OSError) as exc:
        logger.debug("%s: no model card (%s)", base, exc)
        return None
    try:
        from ..tokenizers import HFTokenizer

        tokenizer = HFTokenizer.from_export(export.get("files"), str(export.get("name") or name))
    except (ValueError, ImportError, OSError) as exc:
        logger.warning("%s: the server's tokenizer cannot be used here (%s); prompts are counted with tiktoken, "
                       "which may differ from the server's count", base, exc)
        return ServedModel(window)
    return ServedModel(window, tokenizer)


def _bounded_json(client: Any, url: str, limit: int) -> dict[str, Any]:
    """GET url's JSON object, reading at most `limit` bytes (a server of one's own, but still a reply)."""
    with client.stream("GET", url) as response:
        response.raise_for_status()
        data = bytearray()
        for piece in response.iter_bytes():
            data += piece
            if len(data) > limit:
                raise ValueError(f"{url}: the reply is over {limit:,} bytes")
    found = json.loads(bytes(data))
    if not isinstance(found, dict):
        raise ValueError(f"{url}: not a JSON object")
    return found
