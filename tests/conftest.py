from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

# A suite started as a background job (`make test &`, nohup, a runner without job control) inherits SIGINT ignored,
# and Python keeps it so: the Ctrl-C tests would press a key nobody hears. Restored here, for this process and the
# commands it starts (an ignored signal stays ignored across exec; a handled one is reset to the default).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    """The shared data sets: LONGREAD_SHARED_DATA, else ../shared/data beside the repository."""
    given = os.environ.get("LONGREAD_SHARED_DATA")
    return Path(given).expanduser() if given else REPO.parent / "shared" / "data"


SHARED_DATA = shared_data()


def shared_file(relative: str) -> Path:
    """A file of the shared data (LONGREAD_SHARED_DATA, default ../shared/data), or skip the test with the reason."""
    path = SHARED_DATA / relative
    if not path.is_file():
        pytest.skip(f"shared data not available: {path} (set LONGREAD_SHARED_DATA to the folder that holds it)")
    return path


@pytest.fixture(scope="session")
def embedded_model():
    """The real embedded SmolLM2 model (loaded once per test session)."""
    from longread.backends import get_model

    return get_model("local")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tests: two threads on two cores that other test processes share run
    3-6x slower than one (and tiny matrices gain nothing from a second)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cli_isolated(tmp_path, monkeypatch):
    """For command-line tests: no test touches the user's workspace or picks up the user's model, and rich
    tables are wide enough not to fold file names. A test file's autouse fixture adds what it needs beside it."""
    monkeypatch.setenv("LONGREAD_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.delenv("LONGREAD_MODEL", raising=False)
    monkeypatch.setenv("COLUMNS", "400")


@pytest.fixture(autouse=True)
def chain_by_default(monkeypatch):
    """The command-line tests exercise the chain's plumbing (calls, checkpoints, resume, outputs) with a MockModel
    whose replies are made-up words: `--strategy` comes from LONGREAD_STRATEGY unless a test sets it, and it is the
    chain with rewritten notes, which passes any reply on. (The grounded chain, the default notes, drops made-up
    words by design: test_grounded_chain.py; the product's own default, `auto`, is tested in test_strategies.py
    and test_catalog.py.)"""
    monkeypatch.setenv("LONGREAD_STRATEGY", "chain:notes=rewrite")
