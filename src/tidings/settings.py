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
CONNECT_LEASE_SECONDS = 30


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
    """Bounds on CEL expressions (``functions/expressions.py`` says why), per process, from the
    environment: ``TIDINGS_EXPRESSION_MAX_CHARS``, ``TIDINGS_EXPRESSION_MAX_DEPTH``,
    ``TIDINGS_EXPRESSION_CACHE_MB``, ``TIDINGS_EXPRESSION_MAX_MACRO_DEPTH`` and
    ``TIDINGS_EXPRESSION_MAX_COST``."""

    max_chars: int = 4096
    max_depth: int = 32
    cache_bytes: int = 32 * MIB
    max_macro_depth: int = 1
    max_cost: int = 300_000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ExpressionLimits:
        """The defaults, with what the environment sets; ``ConfigError`` for a value that is
        not a positive whole number."""
        found: dict[str, int] = {}
        for field_name, variable, scale in (("max_chars", "MAX_CHARS", 1),
                                            ("max_depth", "MAX_DEPTH", 1),
                                            ("cache_bytes", "CACHE_MB", MIB),
                                            ("max_macro_depth", "MAX_MACRO_DEPTH", 1),
                                            ("max_cost", "MAX_COST", 1)):
            raw = environ.get(f"TIDINGS_EXPRESSION_{variable}")
            if raw is None or raw == "":
                continue
            if not raw.isascii() or not raw.isdigit() or int(raw) < 1:
                raise ConfigError(f"TIDINGS_EXPRESSION_{variable}: a positive whole number, "
                                  f"got {raw!r}")
            found[field_name] = int(raw) * scale
        return cls(**found)


@dataclass(frozen=True, slots=True, kw_only=True)
class Load:
    """How much a server takes on before it sheds (docs/HTTP_API.md, "Overload").

    Beyond a bound a request is answered at once with ``503`` and ``Retry-After``, never left
    to wait: the official SDKs retry such answers. Bodies are counted in bytes as they arrive
    (and again as they inflate when gzip-encoded), so a few large batches weigh what they
    cost; the events waiting to be stored in rows and in time (at the rate they are being
    stored), so that an accepted request does not wait behind seconds of writes. Slow
    clients are cut: the headers of a request must arrive within ``header_timeout``, its
    body within ``body_timeout`` of the headers, and an idle connection (also a new one that
    sends nothing) is closed after ``keepalive``.
    """

    max_inflight_bytes: int = 32 * MIB  # request bodies being read or handled at once
    max_inflight_requests: int = 1024  # requests with a body being read or handled at once
    max_write_backlog: int = 50_000  # rows waiting to be stored, at most
    max_write_wait: float = 0.25  # seconds the rows waiting to be stored may take to store
    retry_after: int = 1  # seconds, in every 503's Retry-After
    max_connections: int = 1000  # beyond: the newest connections' requests get a 503
    keepalive: float = 5.0  # seconds an idle connection stays open
    header_timeout: float = 10.0  # seconds from a request's first byte to its last header
    body_timeout: float = 30.0  # seconds from the last header to the end of the body

    def __post_init__(self) -> None:
        for name in ("max_inflight_bytes", "max_inflight_requests", "max_write_backlog",
                     "max_write_wait", "max_connections", "keepalive", "header_timeout",
                     "body_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, not {getattr(self, name)}")
        if self.retry_after < 0:
            raise ConfigError(f"retry_after must not be negative, not {self.retry_after}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectSettings:
    """The Connect gateway (``tidings.connect``): where it listens for workers' WebSockets, what
    ``POST /v0/connect/start`` tells them, and how long a call's lease lasts
    (``TIDINGS_CONNECT_LEASE_SECONDS``; workers extend it every quarter of it)."""

    gateway_port: int | None = None  # None: no gateway in this process; 0: any free port
    # False (the default port, API port + 1): a port already taken leaves the process without
    # a gateway, said in the log and by /v0/connect/start, instead of stopping its start.
    gateway_port_given: bool = False
    gateway_host: str = "127.0.0.1"
    gateway_url: str | None = None  # None: ws://<the host /start was asked on>:<gateway_port>
    lease_seconds: int = CONNECT_LEASE_SECONDS
    hello_timeout: float = 5.0  # seconds from the socket's opening to WORKER_CONNECT
    heartbeat_timeout: float = 50.0  # seconds without a word from a worker before it is cut
    max_message_bytes: int = 8 * MIB
    max_apps: int = 10  # apps one connection may serve

    def __post_init__(self) -> None:
        if self.lease_seconds < 2:
            raise ConfigError(f"the Connect lease lasts at least 2 seconds, not "
                              f"{self.lease_seconds}")
        if self.gateway_port is not None and not 0 <= self.gateway_port <= 65535:
            raise ConfigError(f"the Connect gateway port {self.gateway_port} is not a port")

    @property
    def extend_interval(self) -> int:
        """Seconds between a worker's lease extensions (what the READY message says)."""
        return max(1, self.lease_seconds // 4)

    @staticmethod
    def lease_from_env(environ: Mapping[str, str] = os.environ) -> int:
        raw = environ.get("TIDINGS_CONNECT_LEASE_SECONDS", "")
        if not raw:
            return CONNECT_LEASE_SECONDS
        if not raw.isascii() or not raw.isdigit():
            raise ConfigError(f"TIDINGS_CONNECT_LEASE_SECONDS: a whole number, got {raw!r}")
        return int(raw)


@dataclass(frozen=True, slots=True, kw_only=True)
class Observe:
    """What a server tells about itself beyond its answers (``tidings/observe``)."""

    access_log: bool = False  # a log line per HTTP request (``--access-log``)
    metrics: bool = True  # count, and serve ``/metrics`` (``--no-metrics``: neither)
    metrics_public: bool = False  # under serve, ``/metrics`` without a token
    metrics_port: int | None = None  # ``tidings worker``: serve /metrics, /health, /ready
    max_event_names: int = 100  # distinct event names as label values; more are ``other``
    max_names: int = 1000  # distinct app and function names likewise


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything a server process needs to know, built once at start."""

    mode: Mode = "dev"
    database_url: str = "sqlite:///.tidings/tidings.db"
    data_dir: Path = field(default_factory=lambda: Path(".tidings"))
    limits: Limits = field(default_factory=Limits)
    load: Load = field(default_factory=Load)
    dedup_window_ms: int = DAY_MS
    encryption_key: str | None = None
    # Under serve, what outbound calls to user-supplied URLs may reach besides public
    # addresses (``--allow-app-host``; see ``netguard``).
    allow_app_hosts: tuple[str, ...] = ()
    # Where the people's data keys are kept (``TIDINGS_KEYSTORE_URL``): a database of its own,
    # so that a backup of the main database holds none of them and erasing a person makes
    # older backups unreadable for them too. None: in the main database (``vault.py``).
    keystore_url: str | None = None
    # ``--encrypt-data``/``--no-encrypt-data``: stored at start as the default of the
    # environments without an encrypt_data setting of their own (``sealing.py``); None
    # leaves the stored default as it is.
    encrypt_data: bool | None = None
    connect: ConnectSettings = field(default_factory=ConnectSettings)
    observe: Observe = field(default_factory=Observe)

    @property
    def dev(self) -> bool:
        return self.mode == "dev"

    @property
    def server_kind(self) -> str:
        """The value of ``X-Inngest-Server-Kind`` that SDKs expect from this mode."""
        return "dev" if self.dev else "cloud"


def keystore_url_from(value: str | None, *, mode: Mode, data_dir: Path) -> str | None:
    """``TIDINGS_KEYSTORE_URL`` (a plain path means SQLite); in dev, by default, ``keys.db``
    under the data directory, next to the dev master key; else None (the main database)."""
    url = value or os.environ.get("TIDINGS_KEYSTORE_URL") or ""
    if not url:
        return f"sqlite:///{data_dir / 'keys.db'}" if mode == "dev" else None
    return database_url_from(url, data_dir=data_dir)


def parse_size(text: str) -> int:
    """Bytes from ``65536``, ``64k``, ``32M``, ``32MiB`` or ``1g`` (binary multiples)."""
    raw = text.strip().lower().removesuffix("ib").removesuffix("b")
    scale = {"k": 1024, "m": MIB, "g": 1024 * MIB}.get(raw[-1:], 1)
    number = raw[:-1] if scale != 1 else raw
    try:
        value = float(number) * scale
    except ValueError:
        raise ConfigError(f"{text!r} is not a size: use bytes, or a number with k, M or G"
                          ) from None
    return int(value)


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
