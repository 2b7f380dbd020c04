"""What the JSON API and the dashboard read of runs and do to them, written once: a run with
everything its page shows, cancel, rerun, bulk cancel and replay (with the count a preview
shows), cancelling a delayed event.

Refusals are ``RequestRejected`` with the status and message the API answers (404 naming what
was not found, 409 when it is too late); the API's error handler and the dashboard's error page
show them as they are.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from tidings.apps.config import nul_at
from tidings.core import Core
from tidings.engine.replays import BATCH, Replays
from tidings.errors import RequestRejected
from tidings.events.model import StoredEvent
from tidings.events.reads import get_event
from tidings.flow import status as flow_status
from tidings.flow.cancel import cancel_between, cancelled_event
from tidings.functions import registration
from tidings.functions.model import FunctionRow
from tidings.ids import floor_id, new_id, now_ms
from tidings.observe import metrics
from tidings.privacy.erase import run_erasure
from tidings.router.handoff import Stored
from tidings.runs import admin, journal, store, traces
from tidings.runs.admin import PauseRow, Replay
from tidings.runs.local import ALL
from tidings.runs.model import STATUSES, TERMINAL, FailedAttempt, Run, StepRow
from tidings.server.requests import ULID_RE, without_nul
from tidings.storage.base import Environment, EventRow, internal_event
from tidings.storage.tx import Tx
from tidings.triggerdev import invoke as trigger_invoke
from tidings.triggerdev.wire import TRIGGER_QUEUE

log = logging.getLogger("tidings.server")
CANCELLED_EVENT = "tidings/function.cancelled"
CANCEL_REASON = "cancelled through the API"
CANCEL_BATCH = 500
REPLAY_BATCH = BATCH  # runs a replay reruns before it answers; the rest in the background
OPEN = tuple(status for status in STATUSES if status not in TERMINAL)
INVOKED_EVENT = "tidings/function.invoked"
INVOKE_FIELDS = ("data", "user")


def not_found(what: str, ident: str) -> RequestRejected:
    """A 404 naming what was not found (a long id cut short: it came from the caller)."""
    shown = ident if len(ident) <= 100 else ident[:100] + "…"
    return RequestRejected(f"{what} {shown!r} not found", status=404)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunDetail:
    run: Run
    slug: str
    steps: list[StepRow]
    failed: dict[str, list[FailedAttempt]]  # failed attempts by step
    pauses: list[PauseRow]
    waiting: dict[str, Any] | None
    invoked: dict[str, str]  # the runs it invoked, by step
    event: StoredEvent | None
    events: list[StoredEvent]  # every trigger event (a batch has several)

    @property
    def reused(self) -> frozenset[str]:
        """The steps this run took over from the run it reruns (a rerun from a step): their
        results were recorded there, before this run was created, and its code did not run
        them again."""
        run = self.run
        if run.rerun_of is None:
            return frozenset()
        return frozenset(step.step for step in self.steps
                         if step.ended_at is not None and step.ended_at <= run.created_at)


class RunLevers:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._registry = core.registry
        self._wake = core.wakers.wake
        self._replays = Replays(core.storage, self._wake, supervisor=core.supervisor)

    # -- reads ---------------------------------------------------------------------------------

    async def function(self, env: Environment, slug: str) -> FunctionRow:
        fn = await self.core.storage.read(
            partial(registration.function_by_slug, env_id=env.id,
                    slug=without_nul(slug, "function")))
        if fn is None:
            raise not_found("function", slug)
        return fn

    async def functions_of_app(self, env: Environment, app_id: str) -> tuple[str, ...]:
        """The ids of the app's functions (archived ones too); 404 for an app that has none."""
        found = await self.core.storage.read(
            partial(admin.functions_of_app, env_id=env.id, app_id=without_nul(app_id, "app")))
        if not found:
            raise not_found("app", app_id)
        return found

    async def run(self, env: Environment, run_id: str) -> tuple[Run, str]:
        found = None
        if ULID_RE.fullmatch(run_id):
            found = await self.core.storage.read(partial(admin.run_with_slug, run_id=run_id))
        if found is None or found[0].env_id != env.id:
            raise not_found("run", run_id)
        return found

    async def detail(self, env: Environment, run_id: str) -> RunDetail:
        run, slug = await self.run(env, run_id)

        def read(tx: Tx) -> RunDetail:
            return RunDetail(run=run, slug=slug, steps=journal.steps_of(tx, run.id),
                             failed=journal.failed_attempts(tx, run.id),
                             pauses=admin.pauses_of(tx, run.id),
                             waiting=flow_status.waiting(tx, run),
                             invoked=journal.invoked_runs(tx, run.id), event=None, events=[])

        detail = await self.core.storage.read(read)
        events = []
        for event_id in run.event_ids or [run.event_id]:
            event = await self.core.events.get(run.env_id, event_id)
            if event is not None:
                events.append(event)
        first = next((e for e in events if e.id == run.event_id), None)
        return replace(detail, event=first, events=events)

    async def count(self, fn: FunctionRow, since: int, until: int,
                    statuses: tuple[str, ...] | list[str]) -> int:
        """How many runs of ``fn`` created in ``[since, until)`` are in ``statuses``."""
        row = await self.core.storage.read(lambda tx: tx.one("count_runs_of_function", (
            fn.id, floor_id(since), floor_id(until), *_padded(statuses, 7))))
        return int(row[0]) if row else 0

    # -- levers --------------------------------------------------------------------------------

    async def cancel(self, env: Environment, run_id: str) -> tuple[Run, str]:
        run, slug = await self.run(env, run_id)
        if run.status in TERMINAL:
            raise _ended(run)
        cancelled = await self.cancel_run(run, slug)
        again = await self.run(env, run_id)
        if not cancelled:
            raise _ended(again[0])
        return again

    async def cancel_run(self, run: Run, slug: str) -> bool:
        """Cancel a run that has not ended, emitting ``function.cancelled`` when a function
        listens for it; False when it had already ended."""
        now = now_ms()
        emit = await self._cancelled_events(run, slug, now)
        fn = self._registry.by_id(run.function_id)
        app = fn.app_id if fn else ""

        def cancel(tx: Tx) -> bool:
            if not store.cancel_fenced(tx, run.id, CANCEL_REASON, now, emit):
                return False
            traces.record(tx, run, function=slug, app=app, status="Cancelled", now=now)
            return True

        if not await self.core.storage.write(cancel):
            return False
        log.info("run %s cancelled: %s", run.id, CANCEL_REASON,
                 extra={"run_id": run.id, "function": slug})
        metrics.finished(app, slug, "Cancelled",
                         (now - (run.started_at or run.created_at)) / 1000)
        if emit:
            self._emitted([row.id for row in emit])
        if run.parent_run_id:
            self._wake(ALL)
        return True

    async def rerun(self, env: Environment, run_id: str,
                    from_step: str | None = None) -> tuple[Run, str]:
        """A new run with the same events; from a step of the source (its id), with the
        results the source recorded before that step reused (``admin.rerun``)."""
        source, slug = await self.run(env, run_id)
        erasure = await self.core.storage.read(partial(run_erasure, run_id=source.id))
        if erasure is not None:
            raise RequestRejected(f"run {source.id} is a tombstone: its event was deleted when "
                                  f"its person was erased (erasure {erasure}), so there is "
                                  "nothing to rerun", status=409)
        fn = await self.core.storage.read(
            partial(registration.function_by_id, function_id=source.function_id))
        if fn is None or fn.archived_at is not None:
            raise RequestRejected(f"function {slug!r} is archived: its app no longer has it, "
                                  "so a rerun would never run", status=409)
        if from_step is not None:
            await self._check_step(source, fn, from_step)
        new_run_id = await self.core.storage.write(partial(admin.rerun, source=source, fn=fn,
                                                           now=now_ms(), from_step=from_step))
        if from_step is not None:
            log.info("run %s reruns %s from step %s", new_run_id, source.id, from_step,
                     extra={"run_id": new_run_id, "function": slug})
        assert new_run_id is not None  # a rerun's key is new every time
        self._wake(fn.queue)
        return await self.run(env, new_run_id)

    async def invoke(self, env: Environment, slug: str, data: dict[str, Any],
                     user: dict[str, Any]) -> tuple[Run, str]:
        """A run of the function started now with ``data`` (and ``user``), whatever its
        triggers, as the step ``invoke`` of another run would start it, without a parent: its
        event is a ``tidings/function.invoked`` (for a Trigger.dev job, a payload of its first
        trigger), delivered at once so no other function starts from it."""
        fn = await self.function(env, slug)
        if fn.archived_at is not None:
            raise RequestRejected(f"function {slug!r} is archived: its app no longer has it, "
                                  "so its run would never run", status=409)
        now = now_ms()
        if fn.queue == TRIGGER_QUEUE:
            if user:
                raise RequestRejected("user: a Trigger.dev job's payload has no user; put it "
                                      "in data")
            run_id = await self.core.storage.write(partial(
                trigger_invoke.invoke, fn=fn, payload=data, context=None, account_id=None,
                key=None, now=now))
        else:
            event_id = new_id(now)
            sealed, subject = await self.core.vault.seal(env.id, event_id, user)
            event = internal_event(event_id=event_id, env_id=env.id, name=INVOKED_EVENT,
                                   data=data, ts=now, received_at=now, user=sealed,
                                   user_subject=subject)
            run_id = await self.core.storage.write(partial(admin.invoke, fn=fn, event=event,
                                                           now=now))
        log.info("run %s of %s invoked", run_id, slug, extra={"run_id": run_id,
                                                                "function": slug})
        self._wake(fn.queue)
        return await self.run(env, run_id)

    async def _check_step(self, source: Run, fn: FunctionRow, step: str) -> None:
        if fn.queue == TRIGGER_QUEUE:
            raise RequestRejected("from_step: a Trigger.dev job's tasks are kept by their "
                                  "idempotency keys, not as steps: rerun it whole", status=409)
        steps = await self.core.storage.read(partial(journal.steps_of, run_id=source.id))
        if not any(s.step == step for s in steps):
            shown = step if len(step) <= 100 else step[:100] + "…"
            raise RequestRejected(f"from_step: run {source.id} has no recorded step "
                                  f"{shown!r}", status=404)

    async def cancel_delivery(self, env: Environment, event_id: str) -> StoredEvent:
        if not ULID_RE.fullmatch(event_id):
            raise not_found("event", event_id)
        why = await self.core.storage.write(partial(
            admin.cancel_delivery, env_id=env.id, event_id=event_id, now=now_ms()))
        if why == "missing":
            raise not_found("event", event_id)
        if why is not None:
            raise RequestRejected(f"event {event_id} was already {why}", status=409)
        event = await self.core.events.get(env.id, event_id)
        assert event is not None
        return event

    async def replay(self, fn: FunctionRow, since: int, until: int,
                     statuses: list[str]) -> tuple[Replay, bool]:
        """Rerun the runs of ``fn`` created in ``[since, until)`` in ``statuses``; the replay,
        and whether it goes on in the background."""
        replay, more = await self.core.storage.write(partial(
            admin.start_replay, fn=fn, since_ms=since, until_ms=until, statuses=statuses,
            now=now_ms(), batch=REPLAY_BATCH))
        self._wake(fn.queue)
        if more:
            self._replays.carry_on(replay.id, fn)
        return replay, more

    async def cancel_many(self, fn: FunctionRow, since: int, until: int) -> int:
        """Cancel every run of ``fn`` created in ``[since, until)`` that has not ended."""
        await self.core.storage.read(self._registry.refresh)
        total = 0
        while True:
            count = await self.core.storage.write(partial(
                cancel_between, registry=self._registry, fn=fn, since_ms=since,
                until_ms=until, now=now_ms(), batch=CANCEL_BATCH))
            total += count
            if count < CANCEL_BATCH:
                break
        if total:
            self._wake(ALL)
        return total

    # -- helpers -------------------------------------------------------------------------------

    async def _cancelled_events(self, run: Run, slug: str, now: int) -> list[EventRow]:
        """``tidings/function.cancelled`` for the run, when a function listens for it."""
        await self.core.storage.read(self._registry.refresh)
        if not self._registry.listens(run.env_id, CANCELLED_EVENT):
            return []
        def read(tx: Tx) -> list[EventRow]:
            found = (get_event(tx, run.env_id, event_id)
                     for event_id in run.event_ids or [run.event_id])
            return [row for row in found if row is not None]

        rows = await self.core.storage.read(read)
        return [cancelled_event(run, slug, rows, CANCEL_REASON, now)]

    def _emitted(self, event_ids: list[str]) -> None:
        # The runtime of this process routes what it ingests at once; these are the same.
        self.core.handoff.stored(Stored(due=event_ids))


def invoke_request(body: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``data`` and ``user`` of an invocation (``{"data": {…}, "user": {…}}``, both optional
    objects), refused with the field named."""
    if not isinstance(body, dict):
        raise RequestRejected("the body: a JSON object with data and user (both optional)")
    unknown = sorted(set(body) - set(INVOKE_FIELDS))
    if unknown:
        shown = ", ".join(repr(name[:50]) for name in unknown[:5])
        raise RequestRejected(f"unknown field(s): {shown}; expected data, user")
    found = []
    for name in INVOKE_FIELDS:
        value = body.get(name)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise RequestRejected(f"{name}: must be a JSON object")
        where = nul_at(value, name)
        if where is not None:
            raise RequestRejected(f"{where}: must not contain NUL characters")
        found.append(value)
    return found[0], found[1]


def _ended(run: Run) -> RequestRejected:
    return RequestRejected(f"run {run.id} already ended ({run.status})", status=409)


def _padded(statuses: tuple[str, ...] | list[str], size: int) -> list[str | None]:
    chosen = [*dict.fromkeys(statuses)][:size]
    return [*chosen, *[None] * (size - len(chosen))]

