"""PostgreSQL reads one function's runs along ``runs_function``, planned with their values on
each call: the plan its planner prefers for ``function_id = X AND id range ORDER BY id``
(either way) walks ``runs_pkey`` and filters the function (every run of the table when a status
filter matches none, or the function has no open run), and a prepared statement's generic plan
was worse still."""

from __future__ import annotations

import re
from pathlib import Path

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

ON_RUNS_FUNCTION = re.compile(r"Index (Only )?Scan (Backward )?using runs_function on")


def _params(name: str, function_id: str) -> tuple[object, ...]:
    if name == "list_runs_of_function":
        return (function_id, ID_MIN, ID_MAX, "Failed", *[None] * (len(STATUSES) - 1), 51)
    if name == "run_marks_of_functions":
        return ([function_id], ID_MIN, ID_MAX, 200)
    if name == "flow_open_runs":  # a bulk cancel's next batch (flow control)
        return (function_id, ID_MIN, ID_MAX, 10)
    return (function_id, ID_MIN, ID_MAX, 2000)


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
            sql = tx._q[name]
            plan = "\n".join(row[0] for row in conn.execute(
                f"EXPLAIN {sql}", _params(name, function_id)).fetchall())
            assert "runs_function" in plan and "runs_pkey" not in plan, (name, plan)
        # A bulk cancel's batch of open runs, oldest first: with function_id = X the planner
        # walks runs_pkey from the oldest run (at 1,000,000 runs every run of the table when
        # the function has none open); it must be an index scan along runs_function.
        plan = "\n".join(row[0] for row in conn.execute(
            f"EXPLAIN {tx._q['flow_open_runs']}", _params("flow_open_runs", function_id)))
        assert ON_RUNS_FUNCTION.search(plan), plan
        for _ in range(8):  # psycopg prepares a statement on its fifth call
            for name in FUNCTION_READS:
                tx.all(name, _params(name, function_id))
            tx.all("run_marks_of_env", (env_id, ID_MIN, ID_MAX, 10))
        prepared = " ".join(row[0] for row in conn.execute(
            "SELECT statement FROM pg_prepared_statements").fetchall())
    assert "runs_function" not in prepared and "ANY(ARRAY" not in prepared
    assert "WHERE env_id = $1" in prepared  # other reads are prepared as before
