"""Privacy and retention under load (issue 16), ``tidings dev`` on SQLite:

* **erase**: ``--rounds`` people with ``--events`` events each (default 100,000) are loaded;
  after the server has settled and a warm-up, P1's single-event ingest runs alone and while
  one person is erased with ``events=delete`` (P1 in 2 s slices until the erasure ends),
  alternating and ending alone. Each erasure's ingest rate (events stored between its start
  and its end, read back from the database) is compared with the mean of the rounds alone on
  either side, and so is the server's CPU per stored event (by thread too: the steadier
  figure). ``--base-src DIR`` runs the same on that code first. Goal: within 10 %.
* **expire**: ``--expired`` events (default 1,000,000) older than the retention are seeded by
  SQL; after a warm-up, ``--rounds`` rounds of P1 with retention on (``1d``: housekeeping
  deleting them) alternate with rounds with it off (``forever``), starting and ending off:
  rows deleted per second over each "on" round, and P1 against the mean of the "off" rounds
  on either side. Goal: within 10 %. Then housekeeping deletes the rest alone (unpaced, as
  nothing else writes) and the rows/s alone and over the whole are given. ``--lock FILE``
  takes that exclusive lock (``flock``) by stretches of at most ``--stretch`` seconds,
  retention off between them, so a long run (10 M) leaves the machine to others now and then.

``python -m bench.privacy [--events N] [--expired N] [--seconds S] [--rounds N]
[--base-src DIR] [--only erase|expire] [--lock FILE] [--stretch S]``

The server is pinned to core 0 and wrk to core 1, as for P1.
"""

from __future__ import annotations

import argparse
import fcntl
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

from bench.harness import RESULTS, Server, cpu_by_thread, run_wrk, sqlite_server, wrk_available

PERSON = "bench-person"
EVENT = {"name": "app/user.signed_up",
         "data": {"user_id": "u_8f3a2c", "plan": "pro", "seats": 3, "referrer": "newsletter"}}
HOUR_MS = 3_600_000
WARM_UP_S = 5.0  # P1 before the first measured round, its figures dropped
STRETCH_GAP_S = 20.0  # --lock: the lock left to others between stretches
SLICE_S = 2.0  # wrk runs of this long, one after another, make a round of P1


def _api(server: Server) -> str:
    return f"http://127.0.0.1:{server.port}"


def _db(server: Server) -> Path:
    return server.data_dir / "tidings.db"


def _stored_between(server: Server, start_ms: int, end_ms: int) -> int:
    with sqlite3.connect(_db(server)) as conn:
        row = conn.execute("SELECT count(*) FROM events WHERE name = ? AND received_at >= ? "
                           "AND received_at < ?", (EVENT["name"], start_ms, end_ms)).fetchone()
    return int(row[0])


def _preload_person(server: Server, person: str, count: int) -> None:
    with httpx.Client(timeout=120) as http:
        for start in range(0, count, 1000):
            batch = [{"name": "person/did", "data": {"n": n},
                      "user": {"external_id": person, "email": "p@example.org"}}
                     for n in range(start, min(count, start + 1000))]
            reply = http.post(server.url, json=batch)
            reply.raise_for_status()


def _ingest_while(server: Server, body: Path, busy: Callable[[], bool], *,
                  slice_s: float) -> dict[str, Any]:
    """P1 in slices of ``slice_s`` until ``busy()`` is false (once at least): events stored
    per second over that time (read back from the database) and the server's CPU per event,
    in all and by thread (``bench/threadnames``)."""
    start_ms, cpu, threads = int(time.time() * 1000), server.cpu_seconds(), server.threads_cpu()
    while True:
        run_wrk(server.url, body, seconds=slice_s, connections=32)
        if not busy():
            break
    end_ms, cpu = int(time.time() * 1000), server.cpu_seconds() - cpu
    by_thread = cpu_by_thread(threads, server.threads_cpu(), 1)
    stored = _stored_between(server, start_ms, end_ms)
    took = (end_ms - start_ms) / 1000
    return {"s": round(took, 1), "per_s": round(stored / took),
            "cpu_us_per_event": round(1e6 * cpu / max(stored, 1), 1),
            "cpu_share": round(cpu / took, 3),
            "cpu_us_per_event_by_thread": {kind: round(us / max(stored, 1), 1)
                                           for kind, us in by_thread.items() if us}}


def _settle(server: Server, body: Path, timeout: float = 120.0) -> None:
    """Wait until the server is idle (under 5 % of a core over half a second), as after a
    preload it checkpoints and collects for a while; then a warm-up whose figures are dropped."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cpu = server.cpu_seconds()
        time.sleep(0.5)
        if server.cpu_seconds() - cpu < 0.025:
            break
    run_wrk(server.url, body, seconds=WARM_UP_S, connections=32)


def _ingest_for(server: Server, body: Path, seconds: float) -> dict[str, Any]:
    """P1 alone for ``seconds``, in the same slices as while a sweep runs."""
    end = time.monotonic() + seconds - SLICE_S / 2
    return _ingest_while(server, body, lambda: time.monotonic() < end, slice_s=SLICE_S)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def erase_round(count: int, seconds: float, body: Path, rounds: int, src: str | None = None
                ) -> dict[str, Any]:
    """``rounds`` people with ``count`` events each, then, after a warm-up, ingest alone and
    ingest while one of them is erased (P1 in slices until it is done), alternating, ending
    alone: each erasure's ingest rate against the mean of the rounds alone on either side."""
    with sqlite_server(src=src) as server:
        for n in range(rounds):
            _preload_person(server, f"{PERSON}-{n}", count)
        _settle(server, body)
        alone = [_ingest_for(server, body, seconds)]
        erasures: list[dict[str, Any]] = []
        for n in range(rounds):
            done: dict[str, Any] = {}

            def erase(person: str = f"{PERSON}-{n}", done: dict[str, Any] = done) -> None:
                done["start_ms"] = int(time.time() * 1000)
                reply = httpx.delete(f"{_api(server)}/v1/users/{person}",
                                     params={"events": "delete"}, timeout=1800)
                done["end_ms"] = int(time.time() * 1000)
                done["answer"] = reply.json()

            worker = threading.Thread(target=erase)
            worker.start()
            during = _ingest_while(server, body, worker.is_alive, slice_s=SLICE_S)
            worker.join()
            alone.append(_ingest_for(server, body, seconds))
            took_s = (done["end_ms"] - done["start_ms"]) / 1000
            in_window = _stored_between(server, done["start_ms"], done["end_ms"])
            rate = in_window / took_s if took_s > 0 else 0.0
            beside = (alone[-2]["per_s"] + alone[-1]["per_s"]) / 2
            cpu_beside = (alone[-2]["cpu_us_per_event"] + alone[-1]["cpu_us_per_event"]) / 2
            erasures.append({"erase_s": round(took_s, 2), "answer": done["answer"].get("data"),
                             "while_erasing": during, "ingest_per_s_in_window": round(rate),
                             "ratio": round(rate / beside, 3),
                             "ratio_by_cpu": round(cpu_beside / during["cpu_us_per_event"], 3)})
            print(json.dumps({"alone": alone[-2], **erasures[-1]}), flush=True)
        return {"code": src or "this checkout", "events": count, "alone": alone,
                "erasures": erasures,
                "median_erase_s": _median([e["erase_s"] for e in erasures]),
                "median_ratio": _median([e["ratio"] for e in erasures]),
                "median_ratio_by_cpu": _median([e["ratio_by_cpu"] for e in erasures])}


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


def _expired_deleted(server: Server, count: int) -> int:
    """How many of the preloaded events are gone: they go in id order, so the first one left
    says it (an index seek, not a count of millions)."""
    with sqlite3.connect(_db(server)) as conn:
        first = conn.execute("SELECT min(id) FROM events WHERE name = 'old/event'").fetchone()[0]
    return count if first is None else int(first[-16:])


def _retention(server: Server, events_ttl: str) -> None:
    httpx.post(f"{_api(server)}/v1/settings", json={
        "events_ttl": events_ttl, "dedup_window": "1h"}).raise_for_status()


def _sweep_off(server: Server, count: int, timeout: float = 180.0) -> None:
    """Retention off, and back once the sweep under way has stopped (it reads the setting
    before each chunk) and given every freed page back (``PRAGMA freelist_count`` 0: the
    housekeeper frees them, paced, once a pass ends), so an "off" round does none of it."""
    _retention(server, "forever")
    deadline = time.monotonic() + timeout
    seen = -2
    while time.monotonic() < deadline:
        with sqlite3.connect(_db(server)) as conn:
            free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
        gone = _expired_deleted(server, count)
        if free == 0 and gone == seen:
            return
        seen = gone
        time.sleep(1.0)
    raise RuntimeError("the housekeeper did not stop and free its pages within 3 minutes")


def _sweep_on(server: Server, count: int, timeout: float = 60.0) -> int:
    """Retention on (1 day); back once the housekeeper (a pass every 10 s) deletes; how many
    were gone then."""
    gone = _expired_deleted(server, count)
    if gone >= count:
        return gone
    _retention(server, "1d")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = _expired_deleted(server, count)
        if now != gone:
            return now
        time.sleep(0.2)
    raise RuntimeError("the housekeeper deleted nothing within a minute")


class BenchLock:
    """``--lock FILE``: the exclusive benchmark lock, held by stretches (``flock``)."""

    def __init__(self, path: str | None) -> None:
        self._file = open(path, "a") if path else None  # noqa: SIM115

    def hold(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_EX)

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)


def expire_round(count: int, seconds: float, body: Path, rounds: int, *,
                 lock: BenchLock, stretch_s: float) -> dict[str, Any]:
    """``rounds`` pairs, alternating, ending "off": P1 with retention off (forever), P1 with
    it on (1d: housekeeping deleting the preloaded events, rows/s counted over the same
    window); each "on" against the mean of the "off" rounds on either side. Then, until none
    are left, housekeeping alone (no ingest, so unpaced) in stretches of at most
    ``stretch_s``, retention off and ``lock`` released between them."""
    lock.hold()
    with sqlite_server() as server:
        httpx.post(server.url, json=EVENT).raise_for_status()  # the dev environment exists
        seeding = time.monotonic()
        _preload_expired(_db(server), count)
        seeded_s = time.monotonic() - seeding
        db_mib = _db(server).stat().st_size / 2**20
        _settle(server, body)
        offs = [_ingest_for(server, body, seconds)]
        pairs: list[dict[str, Any]] = []
        swept_s = 0.0
        for _ in range(rounds):
            before = _sweep_on(server, count)
            started = time.monotonic()
            on = _ingest_for(server, body, seconds)
            took = time.monotonic() - started
            on["deleted"] = _expired_deleted(server, count) - before
            on["rows_per_s"] = round(on["deleted"] / took)
            swept_s += took
            _sweep_off(server, count)
            offs.append(_ingest_for(server, body, seconds))
            beside = (offs[-2]["per_s"] + offs[-1]["per_s"]) / 2
            cpu_beside = (offs[-2]["cpu_us_per_event"] + offs[-1]["cpu_us_per_event"]) / 2
            pairs.append({"off": offs[-2], "on": on, "ratio": round(on["per_s"] / beside, 3),
                          "ratio_by_cpu": round(cpu_beside / on["cpu_us_per_event"], 3)})
            print(json.dumps(pairs[-1]), flush=True)
        under_ingest = sum(p["on"]["deleted"] for p in pairs)
        alone, alone_s = 0, 0.0
        stretch_began = seeding
        while _expired_deleted(server, count) < count:
            if time.monotonic() - stretch_began > stretch_s:
                _sweep_off(server, count)
                lock.release()
                time.sleep(STRETCH_GAP_S)
                lock.hold()
                stretch_began = time.monotonic()
            before = _sweep_on(server, count)
            started = time.monotonic()
            while (_expired_deleted(server, count) < count
                   and time.monotonic() - stretch_began < stretch_s):
                time.sleep(1.0)
            alone_s += time.monotonic() - started
            alone += _expired_deleted(server, count) - before
            print(json.dumps({"alone_deleted": _expired_deleted(server, count) - before,
                              "s": round(time.monotonic() - started, 1)}), flush=True)
        lock.release()
        return {"expired": count, "seed_s": round(seeded_s, 1), "db_mib": round(db_mib),
                "pairs": pairs, "median_ratio": _median([p["ratio"] for p in pairs]),
                "median_ratio_by_cpu": _median([p["ratio_by_cpu"] for p in pairs]),
                "median_rows_per_s": _median([p["on"]["rows_per_s"] for p in pairs]),
                "deleted_under_ingest": under_ingest,
                "rows_per_s_under_ingest": round(under_ingest / swept_s),
                "deleted_alone": alone, "rows_per_s_alone": round(alone / max(alone_s, 1e-9)),
                "rows_per_s_whole": round((under_ingest + alone) / (swept_s + alone_s))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--expired", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--only", choices=["erase", "expire"], default=None)
    parser.add_argument("--rounds", type=int, default=3,
                        help="erase: people erased, one per round; expire: off/on pairs")
    parser.add_argument("--base-src", default=None,
                        help="erase: also a round on the code of this src folder, first")
    parser.add_argument("--lock", default=None,
                        help="expire: take this lock file (flock, exclusive) by stretches")
    parser.add_argument("--stretch", type=float, default=240.0,
                        help="expire, with --lock: seconds per stretch at most")
    args = parser.parse_args(argv)
    wrk_available()
    summary: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "body.json"
        body.write_bytes(msgspec.json.encode(EVENT))
        if args.only in (None, "erase"):
            if args.base_src:
                summary["erase_base"] = erase_round(args.events, args.seconds, body,
                                                    args.rounds, args.base_src)
                print(json.dumps(summary["erase_base"]), flush=True)
            summary["erase"] = erase_round(args.events, args.seconds, body, args.rounds)
            print(json.dumps(summary["erase"]), flush=True)
        if args.only in (None, "expire"):
            summary["expire"] = expire_round(args.expired, args.seconds, body, args.rounds,
                                             lock=BenchLock(args.lock),
                                             stretch_s=args.stretch)
            print(json.dumps(summary["expire"]))
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (RESULTS / f"privacy-{stamp}.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
