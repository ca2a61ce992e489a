"""MockModel for tests: deterministic, records every call, routes replies by the caller's role.

It is a backend (`--model mock`, the dry run's stand-in) and lives in backends/mock.py; this is its public name.
"""

from .backends.mock import MockModel, RecordedCall, Reply

__all__ = ["MockModel", "RecordedCall", "Reply"]
