"""Scenario: two ``tidings serve`` processes on one PostgreSQL database behind a load balancer
(the address the worker is given), and a Connect worker (official ``inngest`` Python SDK,
``connect()``). The balancer sends everything to the first while it lives, so the worker's
``/v0/connect/start`` is answered by the first and names the first's gateway. The first is
killed with SIGKILL in the middle of a step: the worker's socket drops, it asks the balancer
again, the second answers with its own gateway, and the worker carries on there: the run that
was in flight completes (its recorded step not run again) and a new run completes too."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests import loopback
from tests.acceptance.connect_stack import APP, ConnectStack, Worker
from tests.acceptance.sdk_apps import production_keys, wait_for
from tests.acceptance.test_inngest_py_connect import send
from tests.acceptance.test_inngest_py_connect_processes import serve
from tests.conftest import fresh_schema, stop_server

pytestmark = pytest.mark.postgres


class Balancer:
    """A reverse proxy on loopback that sends each request to the first of its upstreams that
    accepts a connection (what a load balancer does once its health checks see one dead)."""

    def __init__(self, upstreams: list[str]) -> None:
        balancer = self
        self.upstreams = [u.rstrip("/") for u in upstreams]
        self.answered: list[tuple[str, str]] = []  # (upstream, path)
        self._http = httpx.Client(timeout=60)

        class Handler(loopback.Handler):
            def _forward(self) -> None:
                size = int(self.headers.get("content-length") or 0)
                content = self.rfile.read(size) if size else b""
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("content-length", "connection")}
                for upstream in balancer.upstreams:
                    try:
                        reply = balancer._http.request(self.command, upstream + self.path,
                                                       content=content, headers=headers)
                    except httpx.ConnectError:
                        continue
                    balancer.answered.append((upstream, self.path))
                    break
                else:
                    self.send_error(502, "no upstream")
                    return
                self.send_response(reply.status_code)
                for key, value in reply.headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection",
                                           "content-encoding", "date", "server"):
                        self.send_header(key, value)
                self.send_header("content-length", str(len(reply.content)))
                self.end_headers()
                self.wfile.write(reply.content)

            do_GET = do_PUT = do_POST = _forward

        self._server = loopback.Loopback(Handler)
        self.url = self._server.url

    def close(self) -> None:
        self._server.close()
        self._http.close()


def sockets_held(url: str, api_key: str | None) -> float | None:
    """How many worker sockets the process at ``url`` holds (``/metrics``), None if it is
    down."""
    try:
        text = httpx.get(f"{url}/metrics", headers={"authorization": f"Bearer {api_key}"},
                         timeout=5).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith('tidings_connect_workers{state="ready"}'):
            return float(line.rsplit(" ", 1)[1])
    return None


@contextlib.contextmanager
def behind_balancer(tmp_path: Path, *first_args: str, second_args: tuple[str, ...] = ()
                    ) -> Iterator[tuple[ConnectStack, ConnectStack, Balancer]]:
    """Two ``tidings serve`` processes on a fresh PostgreSQL schema (started with
    ``first_args`` and ``second_args``) behind a ``Balancer``; the first's workers, the
    balancer and both processes are stopped after."""
    with fresh_schema() as db:
        keys = production_keys(tmp_path, db=db)
        worker_env = {"INNGEST_DEV": "0", "INNGEST_SIGNING_KEY": keys.signing_key}
        first, second = (ConnectStack(serve(tmp_path, name, db, keys.env, *args), 0, tmp_path,
                                      [], worker_env, keys.api_key, keys.event_key, keys)
                         for name, args in (("first", first_args), ("second", second_args)))
        balancer = Balancer([first.server.url, second.server.url])
        try:
            yield first, second, balancer
        finally:
            for worker in first.workers:
                worker.stop()
            balancer.close()
            stop_server(second.server)
            stop_server(first.server)


def both_logs(first: ConnectStack, second: ConnectStack) -> str:
    """The first's logs (its server's and its workers'), then the second's server's."""
    return first.logs() + "\n--- second ---\n" + (
        second.server.data_dir / "server.log").read_text(errors="replace")


@dataclass(frozen=True, slots=True, kw_only=True)
class HeldRun:
    """A run of a slow function (``connect_stack.py``'s ``slow``, or the TypeScript worker's)
    sent through the second process, whose long step a worker of the first holds until
    ``gate`` exists (``hold_a_run``)."""

    first: ConnectStack
    second: ConnectStack
    run_id: str
    gate: Path

    def logs(self) -> str:
        return both_logs(self.first, self.second)

    def ran(self, step: str) -> int:
        """How many times ``step`` of the run ran."""
        return [s for _, run_id, s, _ in self.first.steps()
                if run_id == self.run_id].count(step)

    def ends_once(self, worker: Worker) -> None:
        """Let the long step end: the run completes, no step of it ran twice, the worker
        carried on, and the second took no reply for a call it does not hold."""
        self.gate.touch()
        done = self.second.api.finished(self.run_id, timeout=120, logs=self.logs)
        assert done["status"] == "Completed", done
        assert done["output"] == {"recorded_by": "w1", "long_by": "w1"}
        assert (self.ran("recorded"), self.ran("long-start"), self.ran("long-end")) == (
            1, 1, 1), self.first.steps()
        assert worker.process.poll() is None  # the worker carried on
        second_log = self.second.server.data_dir / "server.log"
        assert "does not hold" not in second_log.read_text(errors="replace")


def hold_a_run(first: ConnectStack, second: ConnectStack, gate: Path, *,
               event: str = "connect/slow", app: str = APP) -> HeldRun:
    """Once the first holds the worker's socket: a run of ``event``'s slow function sent
    through the second, returned once its long step started (held until ``gate`` exists)."""
    def logs() -> str:
        return both_logs(first, second)

    wait_for(lambda: True if sockets_held(first.server.url, first.api_key) == 1 else None,
             timeout=30, what="the worker to connect to the first process", logs=logs)
    run = second.api.run_of(send(second, event, {"gate": str(gate)}), f"{app}-slow")
    held = HeldRun(first=first, second=second, run_id=run["id"], gate=gate)
    wait_for(lambda: True if held.ran("long-start") else None, timeout=60,
             what="the long step to start", logs=logs)
    return held


@pytest.fixture
def balanced(tmp_path: Path) -> Iterator[tuple[ConnectStack, ConnectStack, Balancer]]:
    with behind_balancer(tmp_path) as stacks:
        yield stacks


def test_workers_of_a_gateway_killed_with_sigkill_carry_on_at_another(
        balanced: tuple[ConnectStack, ConnectStack, Balancer]) -> None:
    first, second, balancer = balanced
    first.start_worker("w1", INNGEST_BASE_URL=balancer.url)

    def logs() -> str:
        return both_logs(first, second)

    wait_for(lambda: True if sockets_held(first.server.url, first.api_key) == 1 else None,
             timeout=30, what="the worker to connect to the first process", logs=logs)
    assert sockets_held(second.server.url, second.api_key) == 0
    assert (first.server.url, "/v0/connect/start") in balancer.answered
    run = second.api.run_of(send(second, "connect/slow", {"seconds": 8}), f"{APP}-slow")

    def long_step_started() -> bool | None:
        return True if any(s[2] == "long-start" for s in first.steps()) else None

    wait_for(long_step_started, timeout=30, what="the long step to start", logs=logs)

    def recorded() -> bool | None:
        steps = second.api.run(run["id"])["steps"]
        return True if any(s["name"] == "recorded" for s in steps) else None

    # The first step is in the database while the long one runs (8 s): written soon after
    # the app reported it, not only when the call ends.
    wait_for(recorded, timeout=5, what="the first step to be recorded", logs=logs)
    first.server.process.send_signal(signal.SIGKILL)
    first.server.process.wait()

    # The worker asks the balancer again; the second process answers and names its gateway.
    wait_for(lambda: True if sockets_held(second.server.url, second.api_key) == 1 else None,
             timeout=60, what="the worker to reconnect to the second process", logs=logs)
    assert (second.server.url, "/v0/connect/start") in balancer.answered
    assert "w1" in {c["instance_id"] for c in second.connected()}

    done = second.api.finished(run["id"], timeout=120, logs=logs)
    assert done["status"] == "Completed", done
    assert done["output"] == {"recorded_by": "w1", "long_by": "w1"}
    ran = [step for _, run_id, step, _ in first.steps() if run_id == run["id"]]
    assert ran.count("recorded") == 1, ran  # recorded before the kill: not run again

    after = second.api.run_of(send(second, "connect/slow", {"seconds": 0}), f"{APP}-slow")
    finished = second.api.finished(after["id"], timeout=60, logs=logs)
    assert finished["status"] == "Completed", finished
    assert finished["output"] == {"recorded_by": "w1", "long_by": "w1"}
