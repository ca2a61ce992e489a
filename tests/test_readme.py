"""The README's transcripts are real output of the current code: each one that can be run here is run again and
compared, line for line, with times masked (and /tmp/lt, the README's scratch folder, moved into the test's).

Those that load a model (the embedded one, the embedder, the demo's) are marked slow. The demo's transcript
needs the pulled 0.5B model (`longread models pull qwen2.5-coder-0.5b`, what `make demo`
does): it is compared when the model is in the user cache, and marked slow (it loads a real model)."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
TIMES = re.compile(r"\d+\.\d s\b")
pytestmark = pytest.mark.integration  # the command line as a process, each transcript end to end


def transcripts() -> dict[str, list[str]]:
    """Every `$ longread ...` line of the README's code blocks -> the lines printed under it."""
    found: dict[str, list[str]] = {}
    inside, command = False, None
    for line in README.splitlines():
        if line.startswith("```"):
            inside, command = not inside, None
        elif inside and line.startswith("$ "):
            command = line[2:]
            found.setdefault(command, [])
        elif inside and command is not None:
            found[command].append(line)
    return found


def run(command: str, tmp: Path, env: dict[str, str]) -> list[str]:
    args = shlex.split(command.replace("/tmp/lt", str(tmp)))
    assert args[0] == "longread"
    done = subprocess.run([sys.executable, "-m", "longread", *args[1:]], cwd=REPO, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900)
    return done.stdout.splitlines()


def masked(lines: list[str], tmp: Path) -> list[str]:
    return [TIMES.sub("T s", line.replace(str(tmp), "/tmp/lt")) for line in lines]


@pytest.fixture
def env(tmp_path):
    return {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120", "LONGREAD_WORKSPACE": str(tmp_path / "ws"),
            "LONGREAD_CONFIG": str(tmp_path / "config.toml"), "LONGREAD_STRATEGY": "auto"}


def check(commands: list[str], tmp: Path, env: dict[str, str]) -> None:
    shown = transcripts()
    for command in commands:
        assert command in shown, f"the README no longer shows `{command}`"
        assert masked(run(command, tmp, env), tmp) == masked(shown[command], tmp), command


def test_the_summary_redo_transcript(tmp_path, env):
    check(["longread summarize examples/lighthouse_keeper.md --out /tmp/lt/sums2 --model mock --window 1024",
           "longread summarize examples/lighthouse_keeper.md --out /tmp/lt/sums2 --model mock --window 2048"],
          tmp_path, env)


def test_the_checks_before_any_call(tmp_path, env):
    env = {k: v for k, v in env.items() if k != "OPENAI_API_KEY"}
    check(['longread ask examples/lighthouse_keeper.md "Who is Ada?" --model openai/gpt-4o-mini',
           'longread ask examples/lighthouse_keeper.md "Who is Ada?" --model foo/bar --dry-run'], tmp_path, env)


@pytest.mark.slow  # `auto` ranks the excerpts first: the embedding model loads before the call is refused
def test_a_server_that_is_not_started(tmp_path, env):
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", 8123)) == 0:
            pytest.skip("something listens on 127.0.0.1:8123 here")
    check(['longread ask examples/lighthouse_keeper.md "Who is Ada?" --model openai/local '
           '--api-base http://127.0.0.1:8123/v1'], tmp_path, env)


@pytest.mark.slow  # a local dry run times one short call of the embedded model
def test_a_window_from_the_settings_file(tmp_path, env):
    shown = transcripts()
    config = "longread config set window 8192"
    assert masked(run(config, tmp_path, env), tmp_path) == [
        line.replace("/home/you/.config/longread/config.toml", "/tmp/lt/config.toml") for line in shown[config]]
    dry = 'longread ask examples/lighthouse_keeper.md "Who is Ada?" --dry-run'
    printed = [line for line in masked(run(dry, tmp_path, env), tmp_path)
               if not line.startswith("longread: converting")]  # a first use of the embedded model says so
    expected = [line.replace("/home/you/.config/longread/config.toml", "/tmp/lt/config.toml") for line in shown[dry]]
    assert printed[:2] == expected[:2]  # the note and the plan; the time estimate is this machine's


@pytest.mark.slow
def test_the_demo_transcript(tmp_path, env):
    from longread.backends.local.pull import is_pulled

    if not is_pulled("qwen2.5-coder-0.5b"):
        pytest.skip("qwen2.5-coder-0.5b is not pulled (make demo pulls it)")
    env = {**env, "LONGREAD_CACHE_DIR": os.environ.get("LONGREAD_CACHE_DIR", "")} if os.environ.get(
        "LONGREAD_CACHE_DIR") else env
    shown = transcripts()["make demo"]
    ask = next(i for i, line in enumerate(shown) if line.startswith("longread/bin") or "longread ask" in line)
    command = shown[ask].split("bin/", 1)[1]
    printed = masked(run(command, tmp_path, env), tmp_path)
    assert printed == masked(shown[ask + 1:], tmp_path)
