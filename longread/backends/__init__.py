"""Model access: one chat interface (base.ChatModel) over litellm (litellm/), the local transformers engine
(local/) and a mock (mock.py).

Names are imported on first use (PEP 562), so `longread.backends.kv` can list its policies for `--help` without
loading numpy, tiktoken or torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ChatModel": "base", "Completion": "base", "Message": "base", "check_window": "base",
    "Backend": "backend", "ModelRow": "backend", "backend_for": "registry", "backends": "registry",
    "check_model": "registry", "get_model": "registry", "is_local_model": "registry", "model_rows": "registry",
    "register_backend": "registry", "stop_local_engines": "registry",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from .base import ChatModel, Completion, Message, check_window
    from .backend import Backend, ModelRow
    from .registry import (
        backend_for, backends, check_model, get_model, is_local_model, model_rows, register_backend, stop_local_engines,
    )
