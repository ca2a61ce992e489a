"""Process settings that must be in place before litellm, tiktoken or transformers are imported.

longread never downloads weights, encodings or price tables at run time:
- litellm would fetch its model price table; LITELLM_LOCAL_MODEL_COST_MAP makes it use the copy it ships.
- tiktoken would fetch its encodings; litellm ships cl100k_base, o200k_base and p50k_base, and we point
  TIKTOKEN_CACHE_DIR at them without importing litellm (that import takes seconds).
- Hugging Face libraries stay offline: every model we load is a local file.
"""

from __future__ import annotations

import importlib.util
import os


def _litellm_tokenizers_dir() -> str | None:
    spec = importlib.util.find_spec("litellm")
    if spec is None or spec.origin is None:
        return None
    path = os.path.join(os.path.dirname(spec.origin), "litellm_core_utils", "tokenizers")
    return path if os.path.isdir(path) else None


def configure() -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    if "TIKTOKEN_CACHE_DIR" not in os.environ:
        bundled = _litellm_tokenizers_dir()
        if bundled:
            os.environ["TIKTOKEN_CACHE_DIR"] = bundled


configure()
