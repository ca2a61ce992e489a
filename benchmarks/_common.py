"""Shared helpers for benchmarks: the machine's name, the shared data folder, and the JSON record format."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# LONGREAD_SHARED_DATA points at the shared data sets when they are not beside the repository.
SHARED_DATA = Path(os.environ.get("LONGREAD_SHARED_DATA") or REPO.parent / "shared" / "data").expanduser()


def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    import os

    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def shared_path(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.is_file():
        sys.exit(f"benchmark needs {path} (../shared/data): not found")
    return path


def write_record(name: str, command: str, results: list[dict], machine_name: str | None = None) -> Path:
    record = {
        "benchmark": name,
        "machine": machine_name or machine(),
        "command": command,
        "date": _dt.date.today().isoformat(),
        "results": results,
    }
    path = REPO / "docs" / "benchmarks" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path
