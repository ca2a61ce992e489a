"""The fault suite, part two (issue 20): hostile input at the surfaces added after the first probe — the server,
URLs, EPUB archives, the chat template, damaged contents inside valid files — and the smaller items beside them.
docs/reliability.md names each promise and its test here.

It follows tests/test_faults.py: the command line on MockModels that count every call, fakes on 127.0.0.1 only,
small limits set through settings so that every test takes well under a few seconds.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from longread.testing import MockModel

from .test_faults import invoke, text_of, use


@pytest.fixture(autouse=True)
def isolated(cli_isolated, monkeypatch):
    monkeypatch.delenv("LONGREAD_TIMEOUT", raising=False)


# -- the smaller items --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["DB_PASS", "SMTP_PASS", "GITHUB_PAT", "GITLAB_PAT", "PROXY_AUTH", "HTTP_AUTH"])
def test_secret_scrubbing_covers_names_ending_pass_pat_or_auth(name):
    from longread.backends.litellm_backend import scrub, secret_env_values

    value = "s3cr3t-value-0123456789"
    environ = {name: value, "PATH": "/usr/local/bin:/usr/bin", "COMPASS_HEADING": "north-north-west"}
    assert secret_env_values(environ) == [value]
    assert scrub(f"echoed {value}", secret_env_values(environ)) == "echoed ***"


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "Infinity"])
def test_a_timeout_that_is_not_a_finite_number_of_seconds_is_refused(tmp_path, monkeypatch, value):
    from longread.backends.litellm_backend import LiteLLMModel

    doc = tmp_path / "a.txt"
    doc.write_text(text_of(2))
    model = use(monkeypatch, MockModel())
    given = invoke("ask", doc, "What?", "--timeout", value)
    monkeypatch.setenv("LONGREAD_TIMEOUT", value)
    from_env = invoke("ask", doc, "What?")
    for result in (given, from_env):
        assert result.exit_code == 2 and "Invalid value for '--timeout'" in result.output
    assert model.calls == []
    with pytest.raises(ValueError, match="finite"):
        LiteLLMModel("openai/fake", timeout=float(value))


@pytest.mark.parametrize("header", ["²", "٣" * 5000, "1" * 5000, "-3", "0x10", " 12 34 "])
def test_a_malformed_cache_prefix_header_is_a_400_not_a_500(header):
    from fastapi.testclient import TestClient

    from longread.serve.app import create_app
    from longread.serve.protocol import CACHE_PREFIX_HEADER

    model = MockModel()
    with TestClient(create_app(model, name="m"), raise_server_exceptions=False) as client:
        response = client.post("/v1/chat/completions", headers={CACHE_PREFIX_HEADER: header.encode()},
                               json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    assert response.status_code == 400, response.text
    assert CACHE_PREFIX_HEADER in response.json()["error"]["message"] and model.calls == []


def test_a_bad_strategy_option_fails_once_before_any_document(tmp_path, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.txt").write_text(text_of(3, str(i)))
    model = use(monkeypatch, MockModel())
    for args in (["ask", folder, "What?"], ["summarize", folder, "--out", tmp_path / "out"],
                 ["ask", folder, "What?", "--dry-run"]):
        result = invoke(*args, "--strategy", "chain:bogus=1")
        assert result.exit_code == 1 and "Traceback" not in result.output
        [line] = result.stderr.splitlines()
        assert line.startswith("error: --strategy chain:bogus=1: ") and "bogus" in line
    assert model.calls == [] and not (tmp_path / "out").exists()


@pytest.mark.parametrize("jobs", [1, 2])
def test_runs_with_different_workspaces_writing_one_out_folder_read_each_document_once(tmp_path, monkeypatch, jobs):
    import time

    from longread.cli.runner import run
    from longread.cli.settings import resolve

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(4):
        (folder / f"{i}.txt").write_text(text_of(6, str(i)))

    def slow(messages):
        time.sleep(0.01)  # long enough for the two runs to meet on every document
        return None

    model = use(monkeypatch, MockModel(responder=slow))
    codes: list[int] = []

    def one_run(workspace: str) -> None:
        settings = resolve("summarize", model="mock", window=512, kv=None, strategy="chain",
                           workspace=tmp_path / workspace, quiet=True, writes_files=True, jobs=jobs)
        codes.append(run([str(folder)], None, settings, tmp_path / "out"))

    runs = [threading.Thread(target=one_run, args=(name,)) for name in ("ws-a", "ws-b")]
    for thread in runs:
        thread.start()
    for thread in runs:
        thread.join(60)
    assert codes == [0, 0]
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("*.json")]
    assert len(summaries) == 4
    assert len(model.calls) == sum(len(s["calls"]) for s in summaries)  # not one call made twice
    assert not list((tmp_path / "out").rglob("*.lock"))  # the locks are gone with the runs
