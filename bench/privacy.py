"""Privacy and retention under load (issue 16), ``tidings dev`` on SQLite:

* **erase**: a person with ``--events`` events (default 100,000) is erased with
  ``events=delete`` while P1's single-event ingest runs at full speed over 32 connections (in
  5 s slices until the erasure ends). The ingest rate while the erasure ran (events stored
  between its start and its end, read back from the database) is compared with the mean of a
  round alone before it and one after; the server's CPU per stored event is given for each
  (the steadier figure). ``--base-src DIR`` runs the same on that code first. Goal: within 10 %.
* **expire**: ``--expired`` events (default 1,000,000) older than the retention are seeded by
  SQL; ``--rounds`` pairs alternate P1 with retention off (``forever``) and on (``1d``:
  housekeeping deleting them). Reported: rows deleted per second over each "on" window, and P1
  against the "off" round beside it. Goal: within 10 %.

``python -m bench.privacy [--events N] [--expired N] [--seconds S] [--rounds N]
[--base-src DIR] [--only erase|expire]``

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
from collections.abc import Callable
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


def _ingest_while(server: Server, body: Path, busy: Callable[[], bool], *,
                  slice_s: float) -> dict[str, float]:
    """P1 in slices of ``slice_s`` until ``busy()`` is false (once at least): events stored
    per second over that time (read back from the database) and the server's CPU per event."""
    start_ms, cpu = int(time.time() * 1000), server.cpu_seconds()
    while True:
        run_wrk(server.url, body, seconds=slice_s, connections=32)
        if not busy():
            break
    end_ms, cpu = int(time.time() * 1000), server.cpu_seconds() - cpu
    stored = _stored_between(server, start_ms, end_ms)
    took = (end_ms - start_ms) / 1000
    return {"s": round(took, 1), "per_s": round(stored / took),
            "cpu_us_per_event": round(1e6 * cpu / max(stored, 1), 1)}


def erase_round(count: int, seconds: float, body: Path, src: str | None = None
                ) -> dict[str, Any]:
    """Ingest alone, ingest while the erasure runs (P1 in slices until it is done), ingest
    alone again; the ratio is to the mean of the two rounds alone."""
    with sqlite_server(src=src) as server:
        _preload_person(server, count)
        before = _ingest_while(server, body, lambda: False, slice_s=seconds)
        done: dict[str, Any] = {}

        def erase() -> None:
            done["start_ms"] = int(time.time() * 1000)
            reply = httpx.delete(f"{_api(server)}/v1/users/{PERSON}",
                                 params={"events": "delete"}, timeout=1800)
            done["end_ms"] = int(time.time() * 1000)
            done["answer"] = reply.json()

        worker = threading.Thread(target=erase)
        worker.start()
        during = _ingest_while(server, body, worker.is_alive, slice_s=5.0)
        worker.join()
        after = _ingest_while(server, body, lambda: False, slice_s=seconds)
        took_s = (done["end_ms"] - done["start_ms"]) / 1000
        in_window = _stored_between(server, done["start_ms"], done["end_ms"])
        rate_during = in_window / took_s if took_s > 0 else 0.0
        alone = (before["per_s"] + after["per_s"]) / 2
        return {"code": src or "this checkout", "events": count, "erase_s": round(took_s, 2),
                "answer": done["answer"].get("data"), "alone_before": before,
                "while_erasing": during, "alone_after": after,
                "ingest_per_s_in_erase_window": round(rate_during),
                "ratio": round(rate_during / alone, 3)}


def _preload_expired(db: Path, count: int) -> None:
    """``count`` events received two days ago, written straight into the database by SQL
    (a million per transaction), ids in order: the n-th ends with n on 16 digits."""
    old = int(time.time() * 1000) - 48 * HOUR_MS
    with sqlite3.connect(db, isolation_level=None) as conn:
        env = conn.execute("SELECT id FROM environments WHERE name = 'dev'").fetchone()[0]
        for start in range(0, count, 1_000_000):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "WITH RECURSIVE n(x) AS (SELECT ? UNION ALL SELECT x + 1 FROM n WHERE x < ?) "
                "INSERT INTO events (id, env_id, name, data, ts, source, received_at, "
                "delivered_at) SELECT ? || printf('%016d', x), ?, 'old/event', ?, ?, 'bench', "
                "?, ? FROM n",
                (start, min(count, start + 1_000_000) - 1, _ulid_time(old), env,
                 msgspec.json.encode({"n": 1}), old, old, old))
            conn.execute("COMMIT")


def _ulid_time(ms: int) -> str:
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    return "".join(alphabet[(ms >> shift) & 31] for shift in range(45, -5, -5))


def _expired_deleted(server: Server) -> int:
    """How many of the preloaded events are gone: they go in id order, so the first one left
    says it (an index seek, not a count of millions)."""
    with sqlite3.connect(_db(server)) as conn:
        first = conn.execute("SELECT min(id) FROM events WHERE name = 'old/event'").fetchone()[0]
    return -1 if first is None else int(first[-16:])


def _retention(server: Server, events_ttl: str) -> None:
    httpx.post(f"{_api(server)}/v1/settings", json={
        "events_ttl": events_ttl, "dedup_window": "1h"}).raise_for_status()


def expire_round(count: int, seconds: float, body: Path, rounds: int) -> dict[str, Any]:
    """``rounds`` pairs, alternating: P1 with retention off (forever), P1 with it on (1d:
    housekeeping deleting the preloaded events, rows/s counted over the same window)."""
    with sqlite_server() as server:
        httpx.post(server.url, json=EVENT).raise_for_status()  # the dev environment exists
        seeding = time.monotonic()
        _preload_expired(_db(server), count)
        seeded_s = time.monotonic() - seeding
        db_mib = _db(server).stat().st_size / 2**20
        pairs: list[dict[str, Any]] = []
        for _ in range(rounds):
            _retention(server, "forever")
            gone = _expired_deleted(server)
            while True:  # the sweep under way stops within a chunk
                time.sleep(0.5)
                now_gone = _expired_deleted(server)
                if now_gone == gone:
                    break
                gone = now_gone
            off = _ingest_while(server, body, lambda: False, slice_s=seconds)
            _retention(server, "1d")
            deadline = time.monotonic() + 60
            while _expired_deleted(server) == gone and time.monotonic() < deadline:
                time.sleep(0.2)  # the housekeeper's next pass (every 10 s)
            before = _expired_deleted(server)
            started = time.monotonic()
            on = _ingest_while(server, body, lambda: False, slice_s=seconds)
            deleted = _expired_deleted(server) - before
            on["rows_per_s"] = round(deleted / (time.monotonic() - started))
            pairs.append({"off": off, "on": on, "ratio": round(on["per_s"] / off["per_s"], 3)})
            print(json.dumps(pairs[-1]), flush=True)
        ratios = sorted(p["ratio"] for p in pairs)
        return {"expired": count, "seed_s": round(seeded_s, 1), "db_mib": round(db_mib),
                "deleted_by_end": _expired_deleted(server), "pairs": pairs,
                "median_ratio": ratios[len(ratios) // 2],
                "median_rows_per_s": sorted(p["on"]["rows_per_s"] for p in pairs
                                            )[len(pairs) // 2]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--expired", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--only", choices=["erase", "expire"], default=None)
    parser.add_argument("--rounds", type=int, default=3, help="expire: off/on pairs")
    parser.add_argument("--base-src", default=None,
                        help="erase: also a round on the code of this src folder, first")
    args = parser.parse_args(argv)
    wrk_available()
    summary: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "body.json"
        body.write_bytes(msgspec.json.encode(EVENT))
        if args.only in (None, "erase"):
            if args.base_src:
                summary["erase_base"] = erase_round(args.events, args.seconds, body,
                                                    args.base_src)
                print(json.dumps(summary["erase_base"]), flush=True)
            summary["erase"] = erase_round(args.events, args.seconds, body)
            print(json.dumps(summary["erase"]), flush=True)
        if args.only in (None, "expire"):
            summary["expire"] = expire_round(args.expired, args.seconds, body, args.rounds)
            print(json.dumps(summary["expire"]))
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (RESULTS / f"privacy-{stamp}.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
