"""Process settings that must be in place before litellm, tiktoken or transformers are imported.

longread never downloads weights, encodings or price tables at run time:
- litellm would fetch its model price table; LITELLM_LOCAL_MODEL_COST_MAP makes it use the copy it ships.
- tiktoken would fetch its encodings; litellm ships cl100k_base, o200k_base and p50k_base, and we point
  TIKTOKEN_CACHE_DIR at them without importing litellm (that import takes seconds).
- Hugging Face libraries stay offline: every model we load is a local file.
- OpenMP threads (torch on CPU) sleep rather than spin at barriers, so a shared machine does not slow the local
  engine several times over (see configure()).
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
    # torch's CPU kernels run on GNU OpenMP, whose idle threads spin-wait at every barrier. When other processes
    # share the cores, a spinning thread takes the time slice its partner needs to finish the same matmul, and the
    # local engine ran 2-8x slower (decode worst: ~200 small parallel regions per token). Passive threads sleep at
    # the barrier instead: the same thread count and the same partitioning, so bit-identical results, at the cost
    # of a futex wake per region on an idle machine. libgomp reads this once, when torch is first imported.
    # Measured in docs/benchmarks.md ("Local engine").
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if "TIKTOKEN_CACHE_DIR" not in os.environ:
        bundled = _litellm_tokenizers_dir()
        if bundled:
            os.environ["TIKTOKEN_CACHE_DIR"] = bundled


configure()
