"""The communication unit (CU) that workers pass along the chain."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..tokenizers import Tokenizer


@dataclass(frozen=True)
class CommunicationUnit:
    """Notes written so far, and the segments whose text they drew evidence from."""

    text: str = ""
    evidence: tuple[int, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        return {"text": self.text, "evidence": list(self.evidence)}

    @classmethod
    def from_dict(cls, data: dict) -> "CommunicationUnit":
        return cls(data.get("text", ""), tuple(data.get("evidence", ())))


def truncate_to_tokens(text: str, tokenizer: Tokenizer, limit: int) -> str:
    """text cut to at most `limit` tokens of tokenizer (re-checked, since decode/encode need not round-trip)."""
    ids = tokenizer.encode(text)
    if len(ids) <= limit:
        return text
    cut = limit
    while cut > 0:
        candidate = tokenizer.decode(ids[:cut])
        if tokenizer.count(candidate) <= limit:
            return candidate
        cut -= 1
    return ""
