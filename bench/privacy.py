"""Privacy and retention under load (issue 16), ``tidings dev`` on SQLite:

* **erase**: a person with ``--events`` events (default 100,000) is erased with
  ``events=delete`` while P1's single-event ingest runs at full speed over 32 connections. The
  ingest rate while the erasure ran (events stored between its start and its end, read back
  from the database) is compared with the rate of a round without it. Goal: within 10 %.
* **expire**: ``--expired`` events (default 1,000,000) older than the retention are in the
  database when ``events_ttl`` is set; housekeeping deletes them while P1 runs. Reported: the
  rows deleted per second, and P1 beside a round without housekeeping. Goal: within 10 %.

``python -m bench.privacy [--events N] [--expired N] [--seconds S] [--only erase|expire]``

The server is pinned to core 0 and wrk to core 1, as for P1.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec

from bench.harness import RESULTS, Server, run_wrk, sqlite_server, wrk_available

PERSON = "bench-person"
EVENT = {"name": "app/user.signed_up",
         "data": {"user_id": "u_8f3a2c", "plan": "pro", "seats": 3, "referrer": "newsletter"}}
HOUR_MS = 3_600_000


def _api(server: Server) -> str:
    return f"http://127.0.0.1:{server.port}"


def _db(server: Server) -> Path:
    return server.data_dir / "tidings.db"


def _stored_between(server: Server, start_ms: int, end_ms: int) -> int:
    with sqlite3.connect(_db(server)) as conn:
        row = conn.execute("SELECT count(*) FROM events WHERE name = ? AND received_at >= ? "
                           "AND received_at < ?", (EVENT["name"], start_ms, end_ms)).fetchone()
    return int(row[0])


def _preload_person(server: Server, count: int) -> None:
    with httpx.Client(timeout=120) as http:
        for start in range(0, count, 1000):
            batch = [{"name": "person/did", "data": {"n": n},
                      "user": {"external_id": PERSON, "email": "p@example.org"}}
                     for n in range(start, min(count, start + 1000))]
            reply = http.post(server.url, json=batch)
            reply.raise_for_status()


def erase_round(count: int, seconds: float, body: Path) -> dict[str, Any]:
    with sqlite_server() as server:
        _preload_person(server, count)
        base = run_wrk(server.url, body, seconds=seconds, connections=32)
        done: dict[str, Any] = {}

        def erase() -> None:
            time.sleep(1.0)
            done["start_ms"] = int(time.time() * 1000)
            reply = httpx.delete(f"{_api(server)}/v1/users/{PERSON}",
                                 params={"events": "delete"}, timeout=600)
            done["end_ms"] = int(time.time() * 1000)
            done["answer"] = reply.json()

        worker = threading.Thread(target=erase)
        worker.start()
        during = run_wrk(server.url, body, seconds=seconds, connections=32)
        worker.join()
        took_s = (done["end_ms"] - done["start_ms"]) / 1000
        in_window = _stored_between(server, done["start_ms"], done["end_ms"])
        rate_during = in_window / took_s if took_s > 0 else 0.0
        return {"events": count, "erase_s": round(took_s, 2),
                "answer": done["answer"].get("data"),
                "baseline_req_per_s": round(base.rps), "wrk_req_per_s": round(during.rps),
                "ingest_per_s_while_erasing": round(rate_during),
                "ratio": round(rate_during / base.rps, 3),
                "erase_within_wrk": took_s + 1.0 <= seconds}


def _preload_expired(db: Path, count: int) -> None:
    """``count`` events received two days ago, written straight into the database."""
    old = int(time.time() * 1000) - 48 * HOUR_MS
    with sqlite3.connect(db) as conn:
        env = conn.execute("SELECT id FROM environments WHERE name = 'dev'").fetchone()[0]
        data = msgspec.json.encode({"n": 1})
        stamp = _ulid_time(old)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO events (id, env_id, name, data, ts, source, received_at, delivered_at)"
            " VALUES (?, ?, 'old/event', ?, ?, 'bench', ?, ?)",
            ((stamp + f"{n:016d}", env, data, old, old, old) for n in range(count)))
        conn.execute("COMMIT")


def _ulid_time(ms: int) -> str:
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    return "".join(alphabet[(ms >> shift) & 31] for shift in range(45, -5, -5))


def expire_round(count: int, seconds: float, body: Path) -> dict[str, Any]:
    with sqlite_server() as server:
        httpx.post(server.url, json=EVENT).raise_for_status()  # the dev environment exists
        _preload_expired(_db(server), count)
        base = run_wrk(server.url, body, seconds=seconds, connections=32)
        httpx.post(f"{_api(server)}/v1/settings", json={
            "events_ttl": "1d", "dedup_window": "1h"}).raise_for_status()
        started = time.monotonic()
        during = run_wrk(server.url, body, seconds=seconds, connections=32)
        deadline = time.monotonic() + 1800
        left = count
        while time.monotonic() < deadline:
            with sqlite3.connect(_db(server)) as conn:
                left = conn.execute("SELECT count(*) FROM events WHERE name = 'old/event'"
                                    ).fetchone()[0]
            if left == 0:
                break
            time.sleep(0.5)
        took = time.monotonic() - started
        return {"expired": count, "left": left, "delete_s": round(took, 1),
                "rows_per_s": round((count - left) / took),
                "baseline_req_per_s": round(base.rps), "req_per_s_while_expiring":
                round(during.rps), "ratio": round(during.rps / base.rps, 3),
                "db_mib_after": round(_db(server).stat().st_size / 2**20, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--expired", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--only", choices=["erase", "expire"], default=None)
    args = parser.parse_args(argv)
    wrk_available()
    summary: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "body.json"
        body.write_bytes(msgspec.json.encode(EVENT))
        if args.only in (None, "erase"):
            summary["erase"] = erase_round(args.events, args.seconds, body)
            print(json.dumps(summary["erase"]))
        if args.only in (None, "expire"):
            summary["expire"] = expire_round(args.expired, args.seconds, body)
            print(json.dumps(summary["expire"]))
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (RESULTS / f"privacy-{stamp}.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
