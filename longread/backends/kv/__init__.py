"""KV cache policies for the local backend, selected by `--kv` strings (docs/kv.md).

| string          | policy                                                     | paper                          |
| --------------- | ---------------------------------------------------------- | ------------------------------ |
| `full`          | keep everything (a DynamicLayer grown with spare room)     | baseline                       |
| `quant:BITS`    | keys per channel, values per token, fp residual window     | KIVI (Liu et al. 2024), KVQuant |
| `sink:N`        | 4 attention sinks + the most recent tokens, N in all       | StreamingLLM (Xiao et al. 2023) |
| `snap:N`        | keep the N tokens an observation window attends to most    | SnapKV (Li et al. 2024), H2O    |
| `mixed:N:BITS`  | those N at full precision, the rest quantized, not dropped | MiKV (Yang et al. 2024)         |
| `fp8`           | every token as an e4m3 float, one scale per token and head | FP8 KV of serving engines       |

    cache = make_cache("snap:1024", model.config)   # a fresh transformers Cache for one call
    model(input_ids=..., position_ids=..., past_key_values=cache)

Each policy is a small dataclass with one method, `new_layer()`, and names its static form (`static_form()`,
static.py) in its own module. docs/kv.md explains how to add one: register a
`PolicyForm` here (`register_policy`), or ship it in a package with an entry point in `longread.kv_policies`:

    [project.entry-points."longread.kv_policies"]
    topk = "longread_topk:form"      # a PolicyForm, or a builder `(*args: str) -> KVPolicy`: --kv topk:256

This module imports torch only when a policy is built, so `--kv` can be checked and listed at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any, Callable

from ... import plugins

if TYPE_CHECKING:
    from .base import KVPolicy

__all__ = [
    "FP8Policy", "FullLayer", "FullPolicy", "KVLayer", "KVPolicy", "MixedPolicy", "PolicyCache", "PolicyForm",
    "QuantPolicy",
    "SinkPolicy", "SnapPolicy", "bf16_bytes_per_token", "cache_bytes", "export_state", "import_state",
    "install_query_hooks", "make_cache", "parse_policy", "policy_forms", "register_policy", "validate_policy",
    "valid_forms", "window_scores",
]

# The policy classes and helpers, imported (with torch) on first use.
_LAZY = {
    "FullLayer": "base", "KVLayer": "base", "KVPolicy": "base", "PolicyCache": "base", "bf16_bytes_per_token": "base",
    "cache_bytes": "base", "export_state": "base", "import_state": "base", "layer_kinds": "base",
    "FP8Policy": "fp8", "FullPolicy": "full", "QuantPolicy": "kivi", "MixedPolicy": "mixed", "SinkPolicy": "sink",
    "SnapPolicy": "snap",
    "install_query_hooks": "observe", "window_scores": "observe",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


@dataclass(frozen=True)
class PolicyForm:
    """One `--kv` form: `prefix[:ARG[:ARG]]`, its help text, and `build(*args: str) -> KVPolicy` (a ValueError
    for a bad value; a TypeError for the wrong number of arguments)."""

    prefix: str
    form: str
    build: Callable[..., Any]


def _number(text: str) -> int:
    if not text.isdigit():
        raise TypeError(f"{text!r} is not a number")
    return int(text)


def _full() -> Any:
    from .full import FullPolicy

    return FullPolicy()


def _fp8() -> Any:
    from .fp8 import FP8Policy

    return FP8Policy()


def _quant(bits: str) -> Any:
    from .kivi import QuantPolicy

    return QuantPolicy(bits=_number(bits))


def _sink(n: str) -> Any:
    from .sink import SinkPolicy

    return SinkPolicy(budget=_number(n))


def _snap(n: str) -> Any:
    from .snap import SnapPolicy

    return SnapPolicy(budget=_number(n))


def _mixed(n: str, bits: str) -> Any:
    from .mixed import MixedPolicy

    return MixedPolicy(budget=_number(n), bits=_number(bits))


_POLICIES: plugins.Registry[Any] = plugins.Registry(plugins.KV_POLICIES, normalize=lambda name: name.strip().lower())


def register_policy(form: PolicyForm) -> None:
    _POLICIES.register(form.prefix, form)


for _form in (
    PolicyForm("full", "full", _full),
    PolicyForm("quant", "quant:BITS with BITS 2, 4 or 8 (e.g. quant:4)", _quant),
    PolicyForm("sink", "sink:N", _sink),
    PolicyForm("snap", "snap:N (N tokens kept per layer, N >= 8, e.g. snap:1024)", _snap),
    PolicyForm("mixed", "mixed:N:BITS (e.g. mixed:512:2)", _mixed),
    PolicyForm("fp8", "fp8", _fp8),
):
    register_policy(_form)

VALID_FORMS = (
    "full; quant:BITS with BITS 2, 4 or 8 (e.g. quant:4); sink:N, snap:N (N tokens kept per layer, N >= 8, "
    "e.g. snap:1024); mixed:N:BITS (e.g. mixed:512:2); fp8"
)


def _as_form(name: str, value: Any) -> PolicyForm:
    if isinstance(value, PolicyForm):
        return value
    return PolicyForm(name, f"{name}[:ARGS]", value)


def policy_forms() -> list[str]:
    """The prefixes `--kv` accepts: the built-ins, then installed plugins' (read without importing them)."""
    return _POLICIES.names()


def valid_forms() -> str:
    """The help text of --kv: the built-in forms and the plugins' prefixes."""
    extra = [name for name in _POLICIES.names() if _POLICIES.is_plugin(name)]
    return VALID_FORMS + (f"; plugins: {', '.join(f'{n}:...' for n in extra)}" if extra else "")


def parse_policy(policy: str | KVPolicy) -> KVPolicy:
    """A policy object from its `--kv` string (a KVPolicy passes through)."""
    if not isinstance(policy, str):
        return policy
    text = policy.strip().lower()
    prefix, *args = text.split(":")
    value = _POLICIES.get(prefix) if prefix else None
    if value is None:
        raise ValueError(f"unknown KV policy {policy!r}. Valid forms: {valid_forms()}")
    form = _as_form(prefix, value)
    try:
        return form.build(*args)
    except TypeError:
        raise ValueError(f"unknown KV policy {policy!r}. Valid forms: {valid_forms()}") from None
    except ValueError as exc:
        raise ValueError(f"KV policy {policy!r}: {exc}. Valid forms: {valid_forms()}") from None


def validate_policy(policy: str) -> str:
    """The canonical string of a valid policy (`" Quant:4 "` -> `"quant:4"`); ValueError listing the forms otherwise."""
    return parse_policy(policy).name


def make_cache(policy: str | KVPolicy, config: Any) -> Any:
    """A fresh cache for one call. `full` on a model with sliding-window layers is transformers' DynamicCache."""
    from .base import PolicyCache, layer_kinds
    from .full import FullPolicy

    parsed = parse_policy(policy)
    if isinstance(parsed, FullPolicy) and layer_kinds(config) != {"full_attention"}:
        from transformers import DynamicCache

        return DynamicCache(config=config)
    return PolicyCache(parsed, config)
