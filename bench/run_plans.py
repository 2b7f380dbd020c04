"""PostgreSQL's reads of one function's runs, timed as the shared SQL writes them and as
PostgreSQL's own version does (``function_id = ANY(ARRAY[X])``, ordered along
``runs_function``), alternating, on a schema ``bench.dashboard`` seeded (1,000,000 runs of 10
functions by default). Each statement is sent unprepared, as ``PostgresTx`` sends these.

Reports per query and function the median wall time and the median CPU time of the server
process serving the connection (``/proc``, so the server must run on this machine).

``python -m bench.run_plans --postgres URL [--schema bench_dashboard] [--rounds 7]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import psycopg

from tidings.storage.sql import SHARED_FILES, dialect_file, queries, split_queries

TICK = os.sysconf("SC_CLK_TCK")
LOW, HIGH = "0" * 26, "Z" * 27


def _server_cpu_ms(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / TICK


def _shared(name: str) -> str:
    for file in SHARED_FILES:
        found = split_queries(dialect_file("shared", file))
        if name in found:
            return found[name].replace("?", "%s")
    raise KeyError(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", required=True)
    parser.add_argument("--schema", default="bench_dashboard")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    sep = "&" if "?" in args.postgres else "?"
    url = f"{args.postgres}{sep}options=-csearch_path%3D{args.schema}"
    own = queries("postgres")
    with psycopg.connect(url, autocommit=True) as conn:
        pid = conn.info.backend_pid
        # The function with no open run and one with open runs (the seed's statuses).
        functions = [row[0] for row in conn.execute(
            "SELECT function_id, bool_or(status NOT IN ('Completed', 'Failed', 'Cancelled'))"
            " FROM runs GROUP BY function_id ORDER BY 2, 1").fetchall()]
        for function_id in (functions[0], functions[-1]):
            params = (function_id, LOW, HIGH, 100)
            walls: dict[str, list[float]] = {"shared": [], "postgres": []}
            cpus: dict[str, list[float]] = {"shared": [], "postgres": []}
            for _ in range(args.rounds):
                for label, sql in (("shared", _shared("flow_open_runs")),
                                   ("postgres", own["flow_open_runs"])):
                    cpu, start = _server_cpu_ms(pid), time.perf_counter()
                    conn.execute(sql, params, prepare=False).fetchall()
                    walls[label].append((time.perf_counter() - start) * 1000)
                    cpus[label].append(_server_cpu_ms(pid) - cpu)
            for label in walls:
                print(f"flow_open_runs {function_id} {label:8}: median "
                      f"{statistics.median(walls[label]):8.1f} ms wall, server CPU "
                      f"{statistics.median(cpus[label]):6.0f} ms")


if __name__ == "__main__":
    main()
