"""What the backend registry holds: a `Backend` (how a family of model strings runs) and the `ModelRow`s it adds
to `longread models`. A module of its own, importing nothing heavy, so that a backend package (litellm/, a plugin)
and the registry can both name them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

from .. import plugins

if TYPE_CHECKING:  # base imports the tokenizers (numpy): `longread models` and the checks do without them
    from .base import ChatModel

Factory = Callable[..., "ChatModel"]


@dataclass(frozen=True)
class ModelRow:
    """One line of `longread models`: a --model string and what runs it. Costs are USD per token."""

    model: str
    backend: str
    description: str = ""
    window: int | None = None
    input_cost: float = 0.0
    output_cost: float = 0.0
    available: bool = True
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "backend": self.backend, "description": self.description, "window": self.window,
            "input_cost_per_million": round(self.input_cost * 1e6, 6),
            "output_cost_per_million": round(self.output_cost * 1e6, 6),
            "available": self.available, "note": self.note,
        }


@dataclass(frozen=True)
class Backend:
    """How a family of model strings runs.

    - `factory(model_string, **options)` builds the ChatModel (options: `kv`, `context_window`, ...; a backend
      ignores those it does not know);
    - `check(model_string, need_key)` raises ModelError with the reason when the string cannot run here (need_key
      is False for a dry run, which calls nothing);
    - `rows()` yields the `longread models` lines;
    - `local`: runs on this machine (a dry run then measures speed instead of pricing calls).
    """

    name: str
    factory: Factory | str
    summary: str = ""
    check: Callable[[str, bool], None] | None = None
    rows: Callable[[], Iterable[ModelRow]] | None = None
    local: bool = False
    options: frozenset[str] = field(default_factory=frozenset)  # options it accepts; empty: all

    def build(self, model: str, **options: Any) -> ChatModel:
        factory = plugins.resolve(self.factory) if isinstance(self.factory, str) else self.factory
        if self.options:
            options = {k: v for k, v in options.items() if k in self.options}
        return factory(model, **options)
