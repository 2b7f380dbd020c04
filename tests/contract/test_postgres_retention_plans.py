"""PostgreSQL's retention queries read only indexes (migration 0024): the walk of expired events
along ``events_env_id``, the check for a run not ended along ``runs_event``, the walk of ended
runs along ``runs_env``, each carrying the columns tested, so housekeeping fetches no heap page
of a row it is about to delete (once autovacuum has set the visibility map). The plans are read
as EXPLAIN (ANALYZE, FORMAT JSON) trees: node types and heap fetches, not text.

The test has a database of its own: VACUUM marks pages all-visible (which an index-only scan
needs, and the planner counts on) only up to the oldest transaction still open in the same
database, and other tests' transactions in the shared one would hold it back."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.conftest import _postgres_or_skip
from tidings.storage.postgres import PostgresStorage
from tidings.storage.tx import PostgresTx

pytestmark = pytest.mark.postgres
SEED = """
INSERT INTO environments (id, name, created_at) VALUES ('env1', 'production', 0);
INSERT INTO functions (id, env_id, app_id, slug, name, queue, config, created_at, updated_at)
VALUES ('f1', 'env1', 'a', 's', 'n', 'q', '{}', 0, 0);
INSERT INTO events (id, env_id, name, data, ts, source, received_at, delivered_at)
SELECT 'E' || lpad(x::text, 20, '0'), 'env1', 'old/event', '{"n":1}', 0, 'bench', 0, 0
FROM generate_series(1, 50000) x;
INSERT INTO runs (id, env_id, function_id, queue, event_id, dedup_key, status, created_at,
                  ended_at, progress_at)
SELECT 'R' || lpad(x::text, 20, '0'), 'env1', 'f1', 'q', 'E' || lpad((x * 2)::text, 20, '0'),
       x::text, CASE WHEN x % 100 = 0 THEN 'Running' ELSE 'Completed' END, 0,
       CASE WHEN x % 100 = 0 THEN NULL ELSE 5 END, 0
FROM generate_series(1, 20000) x;
"""


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)


@pytest.fixture
def own_database() -> Iterator[str]:
    base = _postgres_or_skip()
    name = "t_plans_" + secrets.token_hex(6)
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield psycopg.conninfo.make_conninfo(base, dbname=name)
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


async def test_retention_reads_events_and_runs_from_indexes_only(own_database: str) -> None:
    storage = PostgresStorage(own_database, min_size=1, max_size=2)
    await storage.open()
    await storage.close()
    with psycopg.connect(own_database, autocommit=True) as conn:
        conn.execute(SEED)
        conn.execute("VACUUM ANALYZE events")  # what autovacuum does for a table this size
        conn.execute("VACUUM ANALYZE runs")
        queries = PostgresTx(conn)._q
        # Every event and run is before the cutoff (ids E… < F, R… < S) and expired; 1,000 a
        # chunk, as engine/expiry.py asks.
        for name, params in (("retention_expired_events", ("env1", "F", 1000)),
                             ("retention_expired_runs", ("env1", "S", 10, 1000))):
            found = conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {queries[name]}",
                                 params).fetchone()
            assert found is not None
            nodes = list(_nodes(found[0][0]["Plan"]))
            shown = [(n["Node Type"], n.get("Relation Name"), n.get("Index Name"),
                      n.get("Heap Fetches")) for n in nodes]
            on_tables = [n for n in nodes if n.get("Relation Name") in ("events", "runs")]
            assert {n["Relation Name"] for n in on_tables} == (
                {"events", "runs"} if name == "retention_expired_events" else {"runs"}), shown
            assert all(n["Node Type"] == "Index Only Scan" and n["Heap Fetches"] == 0
                       for n in on_tables), (name, shown)
            assert nodes[0]["Actual Rows"] == 1000, (name, shown)
