"""`longread serve`: an OpenAI-compatible HTTP server over the local engine, so many processes (and Ray tasks) share
one model, its GPU and its segment prefix cache. Clients reach it as `--model openai/NAME --api-base URL/v1`.

    app.py       the FastAPI app: /v1/chat/completions (streaming, response_format), /v1/models[/{id}], /health
    protocol.py  OpenAI's request and reply shapes, and the X-Longread-Cache-Prefix header
    fake.py      a stand-in provider for tests and benchmarks: fixed latency, a capacity, scripted 429s

FastAPI and uvicorn come with the `serve` extra (`pip install 'longread[serve]'`); they are imported only here.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["create_app", "run_server", "served_name"]


def create_app(*args: Any, **kwargs: Any) -> Any:
    from .app import create_app as create

    return create(*args, **kwargs)


def served_name(model: str) -> str:
    """The name clients send as `model` (and write after `openai/`): `local` for the embedded model, the folder's
    name for `hf:PATH`, the model string otherwise."""
    if model.startswith("hf:"):
        return Path(model[3:].rstrip("/")).name or model
    return model


def run_server(app: Any, host: str, port: int, *, log_level: str = "info") -> None:
    """Serves until Ctrl-C (uvicorn's loop and signal handling)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=log_level == "debug")


def missing_extra() -> str | None:
    """Why the server cannot start here, or None."""
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        return (f"longread serve needs {' and '.join(missing)}: pip install 'longread[serve]' "
                f"(python {sys.version_info.major}.{sys.version_info.minor})")
    return None
