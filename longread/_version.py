"""The package's version, in a module of its own so that any module can name it without importing the package's
facade (longread/__init__.py sits above everything)."""

__version__ = "0.1.0"
