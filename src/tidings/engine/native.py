"""The native driver: calls a Python function registered with the Tidings SDK, in-process.

Async handlers run on the event loop; plain ``def`` handlers run in a thread pool with a
synchronous step facade. Either way the call ends in one ``Outcome``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from tidings.calls.error_records import exception_record
from tidings.calls.host import Host, Interrupt
from tidings.calls.outcomes import (
    Blocked,
    Outcome,
    RunDone,
    RunFailed,
)
from tidings.errors import NonRetriableError, RetryAfterError, StepError
from tidings.functions.model import FunctionRow
from tidings.runs.model import Run
from tidings.sdk.context import (
    Context,
    ReceivedEvent,
    Step,
    SyncStep,
    encode_output,
)
from tidings.sdk.function import Function

log = logging.getLogger("tidings.functions")


def retry_at(exc: RetryAfterError, now: int) -> int | None:
    value = exc.retry_after
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, timedelta):
        return now + int(value.total_seconds() * 1000)
    if isinstance(value, int | float):
        return now + int(value)
    return None


class NativeDriver:
    """Calls the functions of one Tidings client, in this process."""

    def __init__(self, functions: Mapping[str, Function], threads: int = 32) -> None:
        self.functions = dict(functions)
        self._async = {slug: fn.is_async for slug, fn in self.functions.items()}
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tidings-fn")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def serves(self, fn: FunctionRow) -> bool:
        return fn.slug in self.functions

    async def call(self, row: FunctionRow, host: Host, *, run: Run,
                   event: dict[str, Any], events: list[dict[str, Any]]) -> Outcome | None:
        """Call the function once; None when the call was abandoned (its lease was lost)."""
        fn = self.functions[row.slug]
        run_id, attempt = run.id, host.attempt
        step = Step(host)
        received = [ReceivedEvent.from_json(e) for e in events]
        first = received[0] if events and events[0] is event else ReceivedEvent.from_json(event)
        ctx = Context(event=first, events=received, run_id=run_id,
                      attempt=attempt, step=step,
                      logger=logging.LoggerAdapter(log, {"run_id": run_id,
                                                         "function": fn.slug}))
        try:
            if self._async[row.slug]:
                result = await fn.handler(ctx)
            else:
                loop = asyncio.get_running_loop()
                ctx.step = SyncStep(step, loop)
                result = await loop.run_in_executor(self._pool, fn.handler, ctx)
        except Interrupt:
            if host.lost:
                return None
            if host.retry is not None:
                return host.retry
            return Blocked(tuple(host.blockers))
        except NonRetriableError as exc:
            return RunFailed(exception_record(exc), retriable=False)
        except RetryAfterError as exc:
            return RunFailed(exception_record(exc), retriable=True,
                             retry_at=retry_at(exc, host.now()))
        except StepError as exc:
            return RunFailed(exc.record(), retriable=False)
        except Exception as exc:
            return RunFailed(exception_record(exc), retriable=True)
        if host.lost:
            return None
        if host.blockers:
            return Blocked(tuple(host.blockers))
        try:
            return RunDone(_unwrap(encode_output(result)))
        except NonRetriableError as exc:
            return RunFailed(exception_record(exc), retriable=False)


def _unwrap(wrapped: bytes) -> bytes:
    # encode_output gives {"data": value}; a run's output is the bare value.
    return wrapped[len(b'{"data":'):-1]
