"""The record of each app: where it is served, what it last synced and whether it answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tidings.functions.model import FunctionRow
from tidings.storage.tx import Tx

SYNCED, UNREACHABLE, FAILED = "synced", "unreachable", "failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class AppRecord:
    env_id: str
    url: str
    app_id: str | None
    sdk: str | None
    framework: str | None
    checksum: str | None
    status: str
    error: str | None
    function_count: int
    created_at: int
    checked_at: int
    synced_at: int | None

    @classmethod
    def from_row(cls, r: tuple[Any, ...]) -> AppRecord:
        return cls(env_id=r[0], url=r[1], app_id=r[2], sdk=r[3], framework=r[4], checksum=r[5],
                   status=r[6], error=r[7], function_count=r[8], created_at=r[9],
                   checked_at=r[10], synced_at=r[11])


def app_at(tx: Tx, env_id: str, url: str) -> AppRecord | None:
    row = tx.one("app_by_url", (env_id, url))
    return AppRecord.from_row(row) if row else None


def apps_of(tx: Tx, env_id: str) -> list[AppRecord]:
    return [AppRecord.from_row(r) for r in tx.all("apps_of_env", (env_id,))]


def synced(tx: Tx, *, env_id: str, url: str, app_id: str, sdk: str | None,
           framework: str | None, checksum: str, functions: int, now: int) -> None:
    """The app at ``url`` synced; it is no longer listed at any other URL."""
    tx.run("app_synced", (env_id, url, app_id, sdk, framework, checksum, functions, now, now,
                          now))
    tx.run("app_moved", (env_id, app_id, url))


def checked(tx: Tx, *, env_id: str, url: str, status: str, error: str | None, now: int) -> None:
    """A sync of the app at ``url`` did not succeed: it is unreachable or it failed."""
    tx.run("app_checked", (env_id, url, status, error, now, now))


@dataclass(frozen=True, slots=True, kw_only=True)
class ListedFunction:
    """A function as the functions API shows it: its row, when its definition was first and
    last written, and when its app last synced (None for native functions)."""

    function: FunctionRow
    created_at: int
    updated_at: int
    synced_at: int | None

    @classmethod
    def from_row(cls, r: tuple[Any, ...]) -> ListedFunction:
        return cls(function=FunctionRow.from_row(r[:9]), created_at=r[9], updated_at=r[10],
                   synced_at=r[11])


def functions_of(tx: Tx, env_id: str) -> list[ListedFunction]:
    """The live functions of an environment, by slug."""
    return [ListedFunction.from_row(r) for r in tx.all("listed_functions", (env_id,))]


def function_named(tx: Tx, env_id: str, slug: str) -> ListedFunction | None:
    """One function of an environment by its slug, archived or not."""
    row = tx.one("listed_function", (env_id, slug))
    return ListedFunction.from_row(row) if row else None
