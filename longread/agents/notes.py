"""The communication unit (CU) that workers pass along the chain."""

from __future__ import annotations

from dataclasses import dataclass, field


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
