"""The user's settings file: default model, window, strategy and KV policy, and model aliases.

    # ~/.config/longread/config.toml (the platform's config folder; LONGREAD_CONFIG names another file)
    model = "fast"
    window = 8192
    strategy = "chain"

    [aliases]
    fast = "openai/gpt-4o-mini"

A command-line option wins over an environment variable (LONGREAD_MODEL), which wins over this file, which wins
over the built-in defaults. `longread alias set NAME MODEL` and `longread config set KEY VALUE` write it.
Read with the standard library's tomllib; written with tomli-w (the standard library has no TOML writer).
"""

from __future__ import annotations

import os
import tempfile
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import LongreadError

SETTINGS: dict[str, type] = {"model": str, "window": int, "strategy": str, "kv": str}
_ALIAS_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class ConfigError(LongreadError):
    """The settings file cannot be read or holds a bad value; the message names the file and the setting."""


def config_path() -> Path:
    env = os.environ.get("LONGREAD_CONFIG")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_config_dir

    return Path(user_config_dir("longread")) / "config.toml"


@dataclass(frozen=True)
class Config:
    path: Path
    model: str | None = None
    window: int | None = None
    strategy: str | None = None
    kv: str | None = None
    aliases: dict[str, str] = field(default_factory=dict)

    def settings(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in SETTINGS if getattr(self, key) is not None}

    def to_toml(self) -> dict[str, Any]:
        data: dict[str, Any] = self.settings()
        if self.aliases:
            data["aliases"] = dict(sorted(self.aliases.items()))
        return data

    def resolve_model(self, model: str) -> str:
        """An alias's model string (aliases do not chain: an alias names a model, not another alias)."""
        return self.aliases.get(model, model)

    def with_setting(self, key: str, value: str | None) -> "Config":
        if key not in SETTINGS:
            raise ConfigError(f"{self.path}: unknown setting {key!r} (settings: {', '.join(SETTINGS)})")
        return replace(self, **{key: None if value is None else _converted(self.path, key, value)})

    def with_alias(self, name: str, model: str | None) -> "Config":
        aliases = dict(self.aliases)
        if model is None:
            aliases.pop(name, None)
        else:
            check_alias_name(name)
            aliases[name] = model
        return replace(self, aliases=aliases)


def check_alias_name(name: str) -> None:
    if not name or not set(name) <= _ALIAS_CHARS or ":" in name or "/" in name:
        raise ConfigError(f"alias {name!r}: use letters, digits, '-', '_' and '.' (no ':' or '/', which model strings use)")
    if name in ("local", "mock"):
        raise ConfigError(f"alias {name!r}: that name is a built-in model")


def _converted(path: Path, key: str, value: Any) -> Any:
    kind = SETTINGS[key]
    if kind is int:
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: {key} must be a whole number, not {value!r}") from None
        if isinstance(value, bool) or number < 1:
            raise ConfigError(f"{path}: {key} must be a positive whole number, not {value!r}")
        return number
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{path}: {key} must be a non-empty string, not {value!r}")
    return value.strip()


def load_config(path: Path | None = None) -> Config:
    """The settings in the file (an empty Config when there is none). A bad file is a ConfigError."""
    import tomllib

    path = path or config_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Config(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({' '.join(str(exc).split())})") from exc
    aliases = data.pop("aliases", {})
    unknown = sorted(set(data) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"{path}: unknown setting {unknown[0]!r} (settings: {', '.join(SETTINGS)}, [aliases])")
    if not isinstance(aliases, dict) or not all(isinstance(v, str) and v.strip() for v in aliases.values()):
        raise ConfigError(f"{path}: [aliases] must map names to model strings, e.g. fast = \"openai/gpt-4o-mini\"")
    values = {key: _converted(path, key, value) for key, value in data.items()}
    return Config(path, aliases={str(k): v.strip() for k, v in aliases.items()}, **values)


def save_config(config: Config) -> None:
    """Writes the file atomically (a temporary file in its folder, then a rename)."""
    import tomli_w

    text = tomli_w.dumps(config.to_toml())
    config.path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=config.path.parent, prefix=".config-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, config.path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
