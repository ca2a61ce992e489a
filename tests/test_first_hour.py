"""The README's own paths fail fast and say why (issue 22): a window from the settings file that the model cannot
hold, a server that is not listening, a missing key from Python, and the small things a newcomer meets first."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import longread
import longread.backends
from longread.cli import app
from longread.errors import ModelError

from .test_cli import QUESTION, answering_mock, long_text


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGREAD_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.setenv("LONGREAD_CONFIG", str(tmp_path / "config" / "config.toml"))
    monkeypatch.delenv("LONGREAD_MODEL", raising=False)
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def doc(tmp_path):
    path = tmp_path / "harbour.txt"
    path.write_text(long_text(8))
    return path


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def using(monkeypatch, **options):
    """`--model` builds a MockModel with these options, whatever the model string."""
    monkeypatch.setattr(longread.backends, "get_model", lambda name, **kw: answering_mock(**options))


# -- a window from the settings file ----------------------------------------------------------------------------------
def test_a_config_window_larger_than_the_local_model_is_lowered_with_a_note_naming_the_file(doc, monkeypatch,
                                                                                            tmp_path):
    using(monkeypatch, context_window=4096)
    assert invoke("config", "set", "window", "8192").exit_code == 0  # a README step

    result = invoke("ask", doc, QUESTION, "--json", "--model", "local")

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["window"] == 4096
    config = tmp_path / "config" / "config.toml"
    assert f"window 8192 (from {config}) is larger than the context window of local (4096): using 4096" in \
        " ".join(result.stderr.split())


def test_an_explicit_window_too_large_stays_an_error(doc, monkeypatch):
    using(monkeypatch, context_window=4096)
    result = invoke("ask", doc, QUESTION, "--model", "local", "--window", 8192)
    assert result.exit_code == 1
    assert "--window 8192 is larger than the context window" in result.stderr


def test_a_config_window_a_model_cannot_hold_names_the_file(doc, monkeypatch, tmp_path):
    # A model whose context is known only once it is built: the error says where the window came from.
    using(monkeypatch, context_window=1024)
    assert invoke("config", "set", "window", "2048").exit_code == 0
    result = invoke("ask", doc, QUESTION, "--model", "mock")
    assert result.exit_code == 1
    assert f"window 2048 (from {tmp_path / 'config' / 'config.toml'}) is larger" in " ".join(result.stderr.split())


# -- a server that is not listening, a missing key from Python -------------------------------------------------------
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # free once closed: nothing listens there


def test_api_base_with_nothing_listening_fails_after_one_attempt_with_a_hint(doc, tmp_path):
    base = f"http://127.0.0.1:{closed_port()}/v1"
    other = tmp_path / "other.txt"
    other.write_text(long_text(4))

    result = invoke("ask", tmp_path, QUESTION, "--model", "openai/local", "--api-base", base, "--window", 1024,
                    "--jobs", 1)

    assert result.exit_code == 1
    said = " ".join(result.stderr.split())
    assert f"nothing is listening at {base} (connection refused; not retried): is `longread serve`" in said
    assert "retrying" not in said  # one attempt, no backoff
    assert "the run stops" in said  # the second document is not tried against the same closed port
    assert "other.txt" not in said


def test_the_python_api_refuses_a_missing_key_before_any_call(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ModelError, match="set OPENAI_API_KEY"):
        longread.ask(long_text(2), QUESTION, model="openai/gpt-4o-mini")
    with pytest.raises(ModelError, match="set OPENAI_API_KEY"):
        longread.ask_many([long_text(2)], QUESTION, model="openai/gpt-4o-mini")


# -- the small things -------------------------------------------------------------------------------------------------
def test_chat_on_a_folder_is_one_line_that_names_no_internal_function(tmp_path):
    (tmp_path / "a.txt").write_text("Some text. " * 20)
    result = invoke("chat", tmp_path, "--model", "mock")
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {tmp_path}: is a folder; a chat reads one document")
    assert "find_documents" not in line and "_" not in line.split(":", 2)[2]


def test_default_prompts_are_importable_from_the_package():
    from longread import DEFAULT_PROMPTS, Prompts

    assert isinstance(DEFAULT_PROMPTS, Prompts)
    changed = DEFAULT_PROMPTS.with_overrides(unanswerable="NOT IN TEXT")
    assert changed.unanswerable == "NOT IN TEXT" and DEFAULT_PROMPTS.unanswerable != "NOT IN TEXT"


def test_python_dash_m_longread_is_the_command_line():
    done = subprocess.run([sys.executable, "-m", "longread", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith(f"longread {longread.__version__}")
    done = subprocess.run([sys.executable, "-m", "longread", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("Usage: longread ")


def test_the_shared_data_folder_can_be_named(monkeypatch, tmp_path):
    from .conftest import REPO, shared_data

    monkeypatch.delenv("LONGREAD_SHARED_DATA", raising=False)
    assert shared_data() == REPO.parent / "shared" / "data"  # beside the repository, as before
    monkeypatch.setenv("LONGREAD_SHARED_DATA", str(tmp_path / "data"))
    assert shared_data() == tmp_path / "data"


def test_a_ray_cluster_that_wants_a_token_is_named_in_the_error(monkeypatch):
    # Ray 2.5x+ clusters started with token authentication refuse a client without the token; the error says
    # what to set instead of "could not reach a Ray cluster".
    ray = pytest.importorskip("ray")
    from ray.exceptions import AuthenticationError

    from longread.cli.run.cluster import connect
    from longread.cli.run.runner import FatalError

    def refused(**options):
        raise AuthenticationError("InvalidAuthToken: the token is missing")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refused)
    with pytest.raises(FatalError, match="asks for token authentication") as failed:
        connect("127.0.0.1:6399")
    assert "RAY_AUTH_MODE=token" in str(failed.value) and str(failed.value).startswith("--ray 127.0.0.1:6399:")


def test_runs_fits_120_columns_without_squeezing_the_document_and_the_question(doc, monkeypatch, tmp_path):
    using(monkeypatch)
    deep = tmp_path / "library" / "nineteenth-century" / "the_lighthouse_keeper_of_carrow_point.txt"
    deep.parent.mkdir(parents=True)
    deep.write_text(long_text(4))
    question = "Why did the keeper stop lighting the lamp at Carrow Point?"
    assert invoke("ask", deep, question, "--window", 1024, "--strategy", "rag:budget=600,order=relevance",
                  "--model", "mock").exit_code == 0
    monkeypatch.setenv("COLUMNS", "120")

    table = invoke("runs").stdout.splitlines()

    assert max(len(line) for line in table) <= 120
    header = next(line for line in table if "document" in line and "question" in line)
    document_width = header.index("question") - header.index("document")
    assert document_width >= 16  # room for a readable name, not two characters
    rows = table[table.index(header) + 2:]  # below the header's rule

    def column(start: str, end: str) -> str:
        a, b = header.index(start), header.index(end)
        return "".join(line[a:b].strip() for line in rows)

    assert column("document", "question").endswith("the_lighthouse_keeper_of_carrow_point.txt")  # folded, whole
    assert "".join(column("question", "model").split()) == "".join(question.split())  # wrapped, not cut


def test_chat_starts_from_the_notes_of_an_earlier_summary_with_the_same_settings(tmp_path, monkeypatch):
    using(monkeypatch)
    story = tmp_path / "story.txt"
    story.write_text(long_text(8))
    # (the chain whose workers' notes the stand-in model's replies make: the grounded one keeps only checked claims)
    settings = ["--model", "mock", "--window", 1024, "--strategy", "chain:notes=rewrite", "--workspace", tmp_path / "ws"]
    assert invoke("summarize", story, "--out", tmp_path / "sums", *settings).exit_code == 0

    result = CliRunner().invoke(app, [str(a) for a in ("chat", story, *settings)], input="Who?\n",
                                catch_exceptions=False)

    assert result.exit_code == 0, result.stderr
    opening = re.search(r"(\d+) notes in memory \(from an earlier reading with the same settings\)", result.stderr)
    assert opening and int(opening.group(1)) > 0, result.stderr
