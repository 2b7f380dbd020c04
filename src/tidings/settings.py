"""Settings: limits, windows and where things live."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tidings.errors import ConfigError

Mode = Literal["dev", "serve"]

MIB = 1024 * 1024
DAY_MS = 24 * 60 * 60 * 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Size limits applied to every ingest request."""

    max_event_bytes: int = 3 * MIB
    max_events_per_request: int = 5_000
    max_body_bytes: int = 10 * MIB
    max_depth: int = 64
    max_name_chars: int = 256
    max_id_chars: int = 512


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpressionLimits:
    """Bounds on CEL expressions (``router/expressions.py`` says why), per process, from the
    environment: ``TIDINGS_EXPRESSION_MAX_CHARS``, ``TIDINGS_EXPRESSION_MAX_DEPTH`` and
    ``TIDINGS_EXPRESSION_CACHE_MB``."""

    max_chars: int = 4096
    max_depth: int = 32
    cache_bytes: int = 32 * MIB

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ExpressionLimits:
        """The defaults, with what the environment sets; ``ConfigError`` for a value that is
        not a positive whole number."""
        found: dict[str, int] = {}
        for field_name, variable, scale in (("max_chars", "MAX_CHARS", 1),
                                            ("max_depth", "MAX_DEPTH", 1),
                                            ("cache_bytes", "CACHE_MB", MIB)):
            raw = environ.get(f"TIDINGS_EXPRESSION_{variable}")
            if raw is None or raw == "":
                continue
            if not raw.isascii() or not raw.isdigit() or int(raw) < 1:
                raise ConfigError(f"TIDINGS_EXPRESSION_{variable}: a positive whole number, "
                                  f"got {raw!r}")
            found[field_name] = int(raw) * scale
        return cls(**found)


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything a server process needs to know, built once at start."""

    mode: Mode = "dev"
    database_url: str = "sqlite:///.tidings/tidings.db"
    data_dir: Path = field(default_factory=lambda: Path(".tidings"))
    limits: Limits = field(default_factory=Limits)
    dedup_window_ms: int = DAY_MS
    encryption_key: str | None = None

    @property
    def dev(self) -> bool:
        return self.mode == "dev"

    @property
    def server_kind(self) -> str:
        """The value of ``X-Inngest-Server-Kind`` that SDKs expect from this mode."""
        return "dev" if self.dev else "cloud"


def database_url_from(value: str | None, *, data_dir: Path) -> str:
    """Resolve ``--db`` / ``TIDINGS_DATABASE_URL`` into a URL; a plain path means SQLite."""
    url = value or os.environ.get("TIDINGS_DATABASE_URL") or ""
    if not url:
        return f"sqlite:///{data_dir / 'tidings.db'}"
    if url.startswith(("postgresql://", "postgres://", "sqlite://")):
        return url
    if "://" in url:
        raise ConfigError(f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql://")
    return f"sqlite:///{url}"
