"""PostgreSQL reads one function's runs along ``runs_function``, planned with their values on
each call: the plan its planner prefers for ``function_id = X AND id range ORDER BY id``
(either way) walks ``runs_pkey`` and filters the function (every run of the table when a status
filter matches none, or the function has no open run), and a prepared statement's generic plan
was worse still. The plans are read as EXPLAIN (FORMAT JSON) trees: node types and index names,
not text (``runs_function`` is also the start of ``runs_function_id_dedup_key_key``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from bench.dashboard import prepare

from tests.conftest import make_settings
from tidings.runs.admin import ID_MAX, ID_MIN
from tidings.runs.model import STATUSES
from tidings.storage.tx import PostgresTx

pytestmark = pytest.mark.postgres
FUNCTION_READS = ("list_runs_of_function", "statuses_of_newest_function_runs",
                  "run_marks_of_function", "run_marks_of_functions", "flow_open_runs")
# Reads along an index in its order: what a LIMIT of the newest (or oldest) runs needs. A bitmap
# scan or a sort would read every run of the function first.
ORDERED_SCANS = {"Index Scan", "Index Only Scan"}


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)


def _plan(conn: psycopg.Connection[Any], sql: str, params: tuple[object, ...]
          ) -> list[dict[str, Any]]:
    """The nodes of the plan PostgreSQL picks for ``sql`` with ``params``, depth first."""
    found = conn.execute(f"EXPLAIN (FORMAT JSON) {sql}", params).fetchone()
    assert found is not None
    return list(_nodes(found[0][0]["Plan"]))


def _params(name: str, function_id: str) -> tuple[object, ...]:
    if name == "list_runs_of_function":  # a page of every status (the dashboard's first page)
        return (function_id, ID_MIN, ID_MAX, *STATUSES, 51)
    if name == "list_runs_of_function failed":  # a status filter (Trigger.dev's cancel of a Job)
        return (function_id, ID_MIN, ID_MAX, "Failed", *[None] * (len(STATUSES) - 1), 51)
    # A window of the newest runs as the dashboard's is of a function's at 1,000,000 runs (2,000
    # of 100,000): as big as the function, its runs are better read all at once and sorted.
    if name == "run_marks_of_functions":
        return ([function_id], ID_MIN, ID_MAX, 40)
    if name == "flow_open_runs":  # a bulk cancel's next batch (flow control)
        return (function_id, ID_MIN, ID_MAX, 10)
    return (function_id, ID_MIN, ID_MAX, 40)


async def test_a_functions_runs_are_read_along_runs_function_in_every_call(
        pg_url: str, tmp_path: Path) -> None:
    # 20,000 runs of 10 functions written in id order, as a live table is: runs_pkey's order is
    # the table's, each function's runs are one in ten.
    await prepare(make_settings(pg_url, tmp_path), events=20_000, runs=20_000, steps=1)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        found = conn.execute("SELECT id, env_id FROM functions WHERE slug = 'bench-f3'")
        function_id, env_id = found.fetchone()  # type: ignore[misc]
        tx = PostgresTx(conn)
        for name in FUNCTION_READS:
            nodes = _plan(conn, tx._q[name], _params(name, function_id))
            shown = [(n["Node Type"], n.get("Relation Name"), n.get("Index Name"))
                     for n in nodes]
            on_runs = [n for n in nodes if n.get("Relation Name") == "runs"
                       or n.get("Index Name", "").startswith("runs")]
            # Each read of runs walks runs_function in order: no other index of runs (not
            # runs_pkey, which the planner prefers for function_id = X), no bitmap, no sequential
            # scan, and no sort above it.
            assert on_runs, (name, shown)
            assert all(n["Node Type"] in ORDERED_SCANS and n.get("Index Name") == "runs_function"
                       for n in on_runs), (name, shown)
            assert not any(n["Node Type"] in ("Sort", "Incremental Sort") for n in nodes), (
                name, shown)
        # A status filter that matches few runs: the runs of the function in that status along
        # runs_function_status (function_id, status, id), then sorted (they are few), or every
        # run of the function along an index that starts with function_id; never runs_pkey
        # (the whole table) nor a sequential scan.
        nodes = _plan(conn, tx._q["list_runs_of_function"],
                      _params("list_runs_of_function failed", function_id))
        on_runs = [n for n in nodes if n.get("Relation Name") == "runs"
                   or n.get("Index Name", "").startswith("runs")]
        assert [n.get("Index Name") for n in on_runs if "Index Name" in n] in (
            ["runs_function_status"], ["runs_function"], ["runs_function_id_dedup_key_key"]
        ), nodes
        assert {n["Node Type"] for n in on_runs} <= {*ORDERED_SCANS, "Bitmap Heap Scan",
                                                      "Bitmap Index Scan"}, nodes
        for _ in range(8):  # psycopg prepares a statement on its fifth call
            for name in FUNCTION_READS:
                tx.all(name, _params(name, function_id))
            tx.all("run_marks_of_env", (env_id, ID_MIN, ID_MAX, 10))
        prepared = " ".join(row[0] for row in conn.execute(
            "SELECT statement FROM pg_prepared_statements").fetchall())
    assert "runs_function" not in prepared and "ANY(ARRAY" not in prepared
    assert "WHERE env_id = $1" in prepared  # other reads are prepared as before
