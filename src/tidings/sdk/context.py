"""What a function sees: ``ctx.event``, ``ctx.run_id``, ``ctx.attempt`` and ``ctx.step``.

A function is called again from the top after every pause (sleep, wait, invoke, retry). Steps
already recorded return their memoized result without running; the first new step runs and is
recorded. Pausing is done by raising ``calls.host.Interrupt``, a ``BaseException``, so a user's
``except Exception:`` cannot swallow it.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NoReturn, TypeVar

import msgspec

from tidings.calls.error_records import exception_record
from tidings.calls.host import Host, Interrupt
from tidings.calls.outcomes import (
    Blocker,
    Invoke,
    Sleep,
    WaitForEvent,
)
from tidings.durations import Duration, to_ms
from tidings.errors import NonRetriableError, RetryAfterError, StepError
from tidings.events.meta import MetaError, resolve_meta

T = TypeVar("T")
DEFAULT_WAIT_MS = 7 * 24 * 3600 * 1000
MAX_PAUSE_MS = 366 * 24 * 3600 * 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceivedEvent:
    """An event as a function receives it."""

    id: str
    name: str
    data: dict[str, Any]
    user: dict[str, Any] = field(default_factory=dict)
    ts: int = 0
    v: str | None = None
    source: str = "tidings"
    context: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None  # Inngest's sessions: ``{"sessions": {key: id}}``

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ReceivedEvent:
        return cls(
            id=raw.get("id", ""), name=raw["name"], data=raw.get("data") or {},
            user=raw.get("user") or {}, ts=raw.get("ts", 0), v=raw.get("v"),
            source=raw.get("source", "tidings"), context=raw.get("context"),
            meta=raw.get("meta"),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "name": self.name, "data": self.data,
                               "user": self.user, "ts": self.ts}
        if self.v is not None:
            out["v"] = self.v
        if self.source != "tidings":
            out["source"] = self.source
        if self.context is not None:
            out["context"] = self.context
        if self.meta is not None:
            out["meta"] = self.meta
        return out


def _to_json(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def encode_output(value: Any) -> bytes:
    try:
        return msgspec.json.encode({"data": value}, enc_hook=_to_json)
    except (TypeError, msgspec.EncodeError) as exc:
        raise NonRetriableError(f"step output is not JSON-serialisable: {exc}") from None


def _hash(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()


def _revive(value: Any, output_type: Any) -> Any:
    if output_type is None:
        return value
    import pydantic

    return pydantic.TypeAdapter(output_type).validate_python(value)


class Step:
    """Step tools for async functions (``await ctx.step.run(...)``)."""

    def __init__(self, host: Host) -> None:
        self._host = host
        self._seen: dict[str, int] = {}

    def _id(self, name: str) -> str:
        if not isinstance(name, str) or not name:
            raise ValueError("a step id is a non-empty string")
        count = self._seen.get(name, 0)
        self._seen[name] = count + 1
        return _hash(name if count == 0 else f"{name}:{count}")

    def _recorded(self, step: str) -> tuple[bool, Any]:
        found, memo = self._host.memo(step)
        if not found:
            return False, None
        if isinstance(memo, dict) and "error" in memo and len(memo) == 1:
            raise StepError.from_record(memo["error"])
        if isinstance(memo, dict) and "data" in memo and len(memo) == 1:
            return True, memo["data"]
        return True, memo

    async def run(self, step_id: str, fn: Callable[..., Any],
                  *args: Any, output_type: Any = None) -> Any:
        """Run ``fn(*args)`` once for this run; later calls get its recorded result."""
        return await self._run(step_id, fn, args, output_type, "run")

    async def _run(self, step_id: str, fn: Callable[..., Any], args: Sequence[Any],
                   output_type: Any, kind: str) -> Any:
        step = self._id(step_id)
        found, value = self._recorded(step)
        if found:
            return _revive(value, output_type)
        try:
            result = fn(*args)
            if inspect.isawaitable(result):
                result = await result
        except (NonRetriableError, RetryAfterError, Interrupt):
            raise
        except Exception as exc:
            record = exception_record(exc)
            _give_up(exc, record, await self._host.errored(step, step_id, record))
        output = encode_output(result)
        await self._host.completed(step, step_id, output, kind=kind)
        return _returned(output, output_type)

    async def sleep(self, step_id: str, duration: Duration) -> None:
        """Pause the run for ``duration`` (timedelta, milliseconds or text like ``"2h"``)."""
        ms = to_ms(duration, f"sleep {step_id!r}")
        await self._pause(step_id, lambda step: Sleep(step, step_id, self._host.now() + ms))

    async def sleep_until(self, step_id: str, when: datetime | int) -> None:
        """Pause the run until ``when`` (an aware datetime or milliseconds since the epoch)."""
        until = int(when.timestamp() * 1000) if isinstance(when, datetime) else when
        await self._pause(step_id, lambda step: Sleep(step, step_id, until))

    async def wait_for_event(self, step_id: str, *, event: str, if_: str | None = None,
                             timeout: Duration = timedelta(days=7)) -> ReceivedEvent | None:
        """The first matching ``event`` to arrive (``if_`` sees ``event`` and ``async``), or None
        at the timeout."""
        ms = to_ms(timeout, f"wait_for_event {step_id!r} timeout")
        value = await self._pause(step_id, lambda step: WaitForEvent(
            step, step_id, event, if_, self._host.now() + min(ms, MAX_PAUSE_MS)))
        return None if value is None else ReceivedEvent.from_json(value)

    async def invoke(self, step_id: str, *, function: Any, data: Mapping[str, Any] | None = None,
                     user: Mapping[str, Any] | None = None,
                     timeout: Duration = timedelta(days=7),
                     meta: Mapping[str, Any] | None = None) -> Any:
        """Run another function with ``data`` as its event's data and return its result.
        ``meta={"sessions": {...}}`` puts the invoked run in those sessions."""
        slug = function if isinstance(function, str) else function.slug
        ms = to_ms(timeout, f"invoke {step_id!r} timeout")
        try:
            resolved = resolve_meta(None if meta is None else dict(meta))
        except MetaError as exc:
            raise NonRetriableError(f"invoke {step_id!r}: {exc}") from None
        return await self._pause(step_id, lambda step: Invoke(
            step, step_id, slug, dict(data or {}), dict(user) if user else None,
            self._host.now() + min(ms, MAX_PAUSE_MS), resolved))

    async def send_event(self, step_id: str, events: Any) -> list[str]:
        """Send events once for this run; a replay returns the first send's ids."""
        batch = events if isinstance(events, list | tuple) else [events]
        body = [e.to_json() if hasattr(e, "to_json") else dict(e) for e in batch]
        key = f"{step_id}:{self._seen.get(step_id, 0)}"
        ids: list[str] = await self._run(step_id, self._host.send, (body, key), None, "send")
        return ids

    async def parallel(self, *branches: Callable[[], Awaitable[T]]) -> list[T]:
        """Run branches concurrently; each may hold steps. Results in branch order."""
        results = await asyncio.gather(*(b() for b in branches), return_exceptions=True)
        return _settle(results)

    async def _pause(self, step_id: str, make: Callable[[str], Blocker]) -> Any:
        step = self._id(step_id)
        found, value = self._recorded(step)
        if found:
            return value
        self._host.block(make(step))
        raise Interrupt()


def _give_up(exc: Exception, record: dict[str, Any], final: bool) -> NoReturn:
    """After a step's failed attempt: raise it into the function when it was the last (as a
    replay would: from its recorded error), otherwise end the call so the step is retried
    later."""
    if final:
        raise StepError.from_record(record) from exc
    raise Interrupt() from None


def _returned(output: bytes, output_type: Any) -> Any:
    """What ``step.run`` gives back: the value as its recorded JSON reads."""
    return _revive(msgspec.json.decode(output)["data"], output_type)


def _settle(results: Sequence[Any]) -> list[Any]:
    interrupted = False
    for result in results:
        if isinstance(result, Interrupt):
            interrupted = True
        elif isinstance(result, BaseException):
            raise result
    if interrupted:
        raise Interrupt()
    return list(results)


class SyncStep:
    """Step tools for plain ``def`` functions, which run in a worker thread.

    A thin facade: engine bookkeeping runs on the event loop; the user's step code runs in the
    function's own thread.
    """

    def __init__(self, step: Step, loop: asyncio.AbstractEventLoop) -> None:
        self._step = step
        self._loop = loop

    def _wait(self, coro: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()  # type: ignore[arg-type]

    def run(self, step_id: str, fn: Callable[..., T], *args: Any, output_type: Any = None) -> Any:
        step = self._step
        sid = step._id(step_id)
        found, value = step._recorded(sid)
        if found:
            return _revive(value, output_type)
        try:
            result = fn(*args)
        except (NonRetriableError, RetryAfterError, Interrupt):
            raise
        except Exception as exc:
            record = exception_record(exc)
            _give_up(exc, record, self._wait(step._host.errored(sid, step_id, record)))
        output = encode_output(result)
        self._wait(step._host.completed(sid, step_id, output))
        return _returned(output, output_type)

    def sleep(self, step_id: str, duration: Duration) -> None:
        self._wait(self._step.sleep(step_id, duration))

    def sleep_until(self, step_id: str, when: datetime | int) -> None:
        self._wait(self._step.sleep_until(step_id, when))

    def wait_for_event(self, step_id: str, *, event: str, if_: str | None = None,
                       timeout: Duration = timedelta(days=7)) -> ReceivedEvent | None:
        return self._wait(self._step.wait_for_event(step_id, event=event, if_=if_,
                                                    timeout=timeout))

    def invoke(self, step_id: str, *, function: Any, data: Mapping[str, Any] | None = None,
               user: Mapping[str, Any] | None = None,
               timeout: Duration = timedelta(days=7),
               meta: Mapping[str, Any] | None = None) -> Any:
        return self._wait(self._step.invoke(step_id, function=function, data=data, user=user,
                                            timeout=timeout, meta=meta))

    def send_event(self, step_id: str, events: Any) -> list[str]:
        return self._wait(self._step.send_event(step_id, events))

    def parallel(self, *branches: Callable[[], T]) -> list[T]:
        results: list[Any] = []
        for branch in branches:
            try:
                results.append(branch())
            except BaseException as exc:
                results.append(exc)
        return _settle(results)


@dataclass(slots=True, kw_only=True)
class Context:
    """The argument of every function call."""

    event: ReceivedEvent
    events: list[ReceivedEvent]
    run_id: str
    attempt: int
    step: Any
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger]
