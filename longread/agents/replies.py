"""Reading a reply: did the model say it found nothing?

One rule for every "not found" exit: a worker's NOTHING RELEVANT, an answer from memory's INSUFFICIENT, a
retrieval answer that Self-Route sends on to the chain. Small models paraphrase the marker, so a short reply that
only says so in other words counts too; a long reply that mentions a phrase may still carry notes, and a reply
that starts with the marker and goes on ("NOTHING RELEVANT, but the text says ...") keeps what follows.
"""

from __future__ import annotations

from typing import Sequence

from .prompts import NOT_FOUND_PHRASES

SHORT_REPLY_CHARS = 160
_EDGE = ".!?:;,\"'`*#_()[] \n\t-"


def _plain(text: str) -> str:
    return text.strip().strip(_EDGE).lower()


def found_nothing(reply: str, marker: str, phrases: Sequence[str] = NOT_FOUND_PHRASES) -> bool:
    """True when a reply says it found nothing: empty, the marker alone, or a short reply made of a
    not-found phrase (see `after_marker` for a reply that goes on after the marker)."""
    text = _plain(reply)
    if not text or text == marker.lower():
        return True
    if text.startswith(marker.lower()) and not _plain(text[len(marker):]):
        return True
    if text.startswith(marker.lower()):
        return False  # the marker, then content: the content counts (after_marker strips the marker)
    return len(text) < SHORT_REPLY_CHARS and any(phrase in text for phrase in phrases)


def after_marker(reply: str, marker: str) -> str:
    """The reply without a leading marker (and the punctuation after it)."""
    stripped = reply.strip()
    head = stripped.lstrip(_EDGE)
    if head.lower().startswith(marker.lower()):
        return head[len(marker):].lstrip(_EDGE + ",").strip()
    return stripped
