"""`--ray`: a folder's documents as tasks on a local Ray instance (2 CPUs, started once for this module).

A Ray run writes what a local run writes; a document that fails in its task is a row of the failure table and the
others go on; a rerun skips finished documents without sending a task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from longread.cli import app
from longread.cli.run.outputs import WRITE_ID

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'longread[ray]')")
pytestmark = pytest.mark.integration  # a Ray instance and its worker processes

PARAGRAPH = "The keeper wrote the weather in the log each night, and the ships that passed, and the lamp's oil. "


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except Exception as exc:  # a sandbox without shared memory or sockets for Ray's processes
        pytest.skip(f"a local Ray instance cannot start here: {type(exc).__name__}: {exc}")
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.delenv("LONGREAD_MODEL", raising=False)
    monkeypatch.delenv("LONGREAD_RAY_ADDRESS", raising=False)
    monkeypatch.setenv("COLUMNS", "400")


def books(tmp_path: Path, count: int = 4, long_one: bool = False) -> Path:
    root = tmp_path / "books"
    root.mkdir()
    for i in range(count):
        body = "\n\n".join(f"Night {n} of log {i}. " + PARAGRAPH for n in range(6))
        (root / f"log{i}.md").write_text(f"# Log {i}\n\n{body}", encoding="utf-8")
    if long_one:
        (root / "zz-long.md").write_text("# Long\n\n" + "\n\n".join(PARAGRAPH * 3 for _ in range(40)), encoding="utf-8")
    return root


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def outputs(out: Path) -> dict[str, object]:
    """Every output file, with what a run cannot reproduce (timings, whether checkpoints were reused) left out."""
    found: dict[str, object] = {}
    for path in sorted(out.rglob("*")):
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            data.pop("reused", None)
            data.pop("write_id", None)  # a new one each write (outputs.SummaryFiles.write)
            data["usage"].pop("seconds", None)
            for call in data["calls"]:
                call.pop("seconds", None)
            found[path.name] = data
        elif path.is_file():
            found[path.name] = WRITE_ID.sub("", path.read_text())
    return found


def test_a_ray_run_writes_what_a_local_run_writes_and_a_rerun_skips(tmp_path):
    root = books(tmp_path)
    common = ("summarize", root, "--model", "mock:24", "--window", "512")
    local = invoke(*common, "--out", tmp_path / "local", "--workspace", tmp_path / "ws-local")
    on_ray = invoke(*common, "--out", tmp_path / "ray", "--workspace", tmp_path / "ws-ray", "--ray")
    assert local.exit_code == on_ray.exit_code == 0, on_ray.output
    assert len(outputs(tmp_path / "ray")) == 8
    assert outputs(tmp_path / "ray") == outputs(tmp_path / "local")
    # The tasks checkpointed in the run's workspace: the same run read locally reuses every finished thread.
    again = invoke(*common, "--out", tmp_path / "again", "--workspace", tmp_path / "ws-ray", "--json")
    assert all(json.loads(line)["reused"] for line in again.stdout.splitlines())

    rerun = invoke(*common, "--out", tmp_path / "ray", "--workspace", tmp_path / "ws-ray", "--ray", "auto")
    assert rerun.exit_code == 0 and rerun.output.count("skipped") == 4


def test_a_failed_task_is_a_row_of_the_failure_table_and_the_others_go_on(tmp_path, monkeypatch):
    """The tasks call a fake provider over HTTP; it refuses (400) every request about one document."""
    from longread.serve.fake import FakeProvider

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    root = books(tmp_path, count=2)
    (root / "zz-poison.md").write_text("# Poison\n\nPOISON. " + PARAGRAPH, encoding="utf-8")

    def poisoned(body):
        return "refused: this document" if any("POISON" in m["content"] for m in body["messages"]) else None

    with FakeProvider(reject=poisoned) as server:
        args = ("ask", root, "What did the keeper write?", "--model", "openai/fake", "--api-base", server.base_url,
                "--window", "1024", "--workspace", tmp_path / "ws", "--ray")
        result = invoke(*args, "--json")
        table = invoke(*args)
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["source"].rsplit("/", 1)[-1] for line in lines] == ["log0.md", "log1.md", "zz-poison.md"]
    assert lines[0]["answer"] and lines[1]["answer"]
    assert lines[2]["error_type"] == "BadRequestError" and "refused: this document" in lines[2]["error"]
    assert table.exit_code == 1 and "1 of 3 document(s) failed" in table.output and "zz-poison.md" in table.output
