"""longread: read documents far longer than a model's window."""

from . import _env  # noqa: F401  (offline settings before any heavy import)

__version__ = "0.1.0"
