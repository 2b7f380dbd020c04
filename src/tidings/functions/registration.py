"""Registering functions, written once for both databases (functions of a ``Tx``): an app's
definitions become rows, the ones it dropped are archived, and the registry version moves on so
that every process reloads its ``Registry``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tidings.functions.model import FunctionRow, dumps
from tidings.ids import new_id
from tidings.storage.tx import Tx


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionDef:
    slug: str
    name: str
    url: str | None
    config: dict[str, Any]


def register(tx: Tx, *, env_id: str, app_id: str, queue: str, defs: Sequence[FunctionDef],
             now: int, archive_missing: bool = True) -> list[FunctionRow]:
    """Create or update an app's functions; archive the ones it no longer has. An SDK app and
    a native client may share an app id: each archives only functions of its own queue."""
    for d in defs:
        tx.run("upsert_function", (new_id(now), env_id, app_id, d.slug, d.name, queue, d.url,
                                   dumps(d.config), now, now))
    if archive_missing:
        keep = {d.slug for d in defs}
        for row in tx.all("app_functions", (env_id, app_id)):
            if row[5] == queue and row[3] not in keep:
                tx.run("archive_function", (now, row[0]))
    tx.run("bump_registry")
    rows = []
    for d in defs:
        found = tx.one("function_by_slug", (env_id, d.slug))
        assert found is not None
        rows.append(FunctionRow.from_row(found))
    return rows


def registry_version(tx: Tx) -> int:
    row = tx.one("registry_version")
    return int(row[0]) if row else 0


def live_functions(tx: Tx) -> list[FunctionRow]:
    return [FunctionRow.from_row(r) for r in tx.all("live_functions")]


def function_by_slug(tx: Tx, env_id: str, slug: str) -> FunctionRow | None:
    row = tx.one("function_by_slug", (env_id, slug))
    return FunctionRow.from_row(row) if row else None


def function_by_id(tx: Tx, function_id: str) -> FunctionRow | None:
    row = tx.one("function_by_id", (function_id,))
    return FunctionRow.from_row(row) if row else None
