"""Supervision: every long-lived loop of a process survives a database outage, or the process
stops loudly.

A loop (the executor's claim loop, the router, cron …) is started with ``Supervisor.start``.
When it raises an ``Exception`` the supervisor starts it again after a pause that doubles from
0.1 s to at most 2 s, for as long as it takes: a database restart, a failover, a full disk or a
lock held too long all end, and the loop carries on where the database left it (everything it
works from is in the database). ``Outage`` keeps the log readable: the first failure of an
outage is logged with the loop's name and the error (again if the error changes), the retries
in between are not, and the recovery is logged once when the loop reports progress (the ``ok``
it is given).

What cannot be retried ends the loop for good: anything that is not an ``Exception`` (a panic
in a native library, ``SystemExit``) and ``StorageStopped`` (the SQLite writer thread died).
The loop is then *dead*: ``/health`` answers 503 and ``on_dead`` is called, which makes
``tidings dev``/``serve``/``worker`` exit with status 1 so that their supervisor (systemd,
Kubernetes, …) starts a fresh process. A process that answers ``/health`` with 200 is running
every one of its loops.

Threads (the SQLite writer, syncer and checkpointer) cannot be restarted from here; they use
``Outage`` for the same logging and stop the storage loudly when they die (``sqlite.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from tidings.errors import DatabaseUnavailable, StorageStopped
from tidings.outage import unavailable

log = logging.getLogger("tidings.supervision")

Ok = Callable[[], None]
_OUTAGE = DatabaseUnavailable  # every error of an outage, whatever the driver calls it
LoopBody = Callable[[Ok], Coroutine[Any, Any, None]]


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class Outage:
    """The failures of one loop since it last worked.

    ``failed`` logs the first failure of an outage and says how long to wait before trying
    again; ``ok`` ends the outage, logging once how long it lasted. Failures in between are
    not logged unless they are of another kind: every error that says the database is away
    (``outage.py``: a lost connection, a refused one, a pool timeout …) is one kind,
    any other exception class its own, so a bug appearing mid-outage is still seen."""

    def __init__(self, name: str, *, first_delay: float = 0.1, max_delay: float = 2.0,
                 logger: logging.Logger = log, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.name = name
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.failures = 0
        self.since: float | None = None
        self.error: str | None = None
        self._logged: type[BaseException] | None = None  # or _OUTAGE
        self._log = logger
        self._clock = clock

    def failed(self, exc: BaseException) -> float:
        """Record a failure; the seconds to wait before the next try."""
        self.failures += 1
        self.error = describe(exc)
        if self.since is None:
            self.since = self._clock()
        kind = _OUTAGE if unavailable(exc) else type(exc)
        if kind is not self._logged:
            self._logged = kind
            self._log.error("%s failed: %s; retrying with backoff until it works (logged once)",
                            self.name, self.error, exc_info=exc)
        return float(min(self.max_delay, self.first_delay * 2 ** min(self.failures - 1, 30)))

    def ok(self) -> None:
        """The loop did its work: end the outage, if there was one."""
        if not self.failures:
            return
        lasted = self._clock() - (self.since or self._clock())
        self._log.warning("%s works again after %d failed attempts over %.1f s (last: %s)",
                          self.name, self.failures, lasted, self.error)
        self.failures = 0
        self.since = None
        self.error = None
        self._logged = None


@dataclass(frozen=True, slots=True)
class Report:
    """What ``/health`` says: loops retrying after failures, and loops dead for good."""

    failing: dict[str, str]
    dead: dict[str, str]

    @property
    def healthy(self) -> bool:
        return not self.dead


class Supervisor:
    """Starts a process's long-lived loops and keeps them running (see the module's doc)."""

    def __init__(self, *, on_dead: Callable[[str], None] | None = None,
                 first_delay: float = 0.1, max_delay: float = 2.0) -> None:
        self._on_dead = on_dead
        self._first_delay = first_delay
        self._max_delay = max_delay
        self._outages: dict[str, Outage] = {}
        self._dead: dict[str, str] = {}

    def start(self, name: str, body: LoopBody) -> asyncio.Task[None]:
        """Run ``body(ok)`` in a task until it returns, restarting it when it fails; ``body``
        calls ``ok()`` whenever it got work done, which ends an outage. Cancel the task to
        stop it."""
        outage = Outage(name, first_delay=self._first_delay, max_delay=self._max_delay)
        self._outages[name] = outage
        return asyncio.create_task(self._keep(name, body, outage), name=name)

    def report(self) -> Report:
        failing = {name: outage.error for name, outage in self._outages.items()
                   if outage.error is not None}
        return Report(failing=failing, dead=dict(self._dead))

    async def _keep(self, name: str, body: LoopBody, outage: Outage) -> None:
        try:
            while True:
                try:
                    await body(outage.ok)
                    return
                except (asyncio.CancelledError, StorageStopped):
                    raise
                except Exception as exc:
                    delay = outage.failed(exc)
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._died(name, exc)
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
        finally:
            if name not in self._dead and self._outages.get(name) is outage:
                del self._outages[name]

    def _died(self, name: str, exc: BaseException) -> None:
        why = f"{name} stopped for good: {describe(exc)}"
        self._dead[name] = describe(exc)
        log.critical("%s; this process can no longer do its work and must be restarted", why,
                     exc_info=exc)
        if self._on_dead is not None:
            self._on_dead(why)
