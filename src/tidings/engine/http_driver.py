"""The HTTP driver: calls functions served by official Inngest SDK apps over the Inngest call
protocol, on the executor of queue ``http``.

A call ``POST``s the run's event and memoized steps to the function's URL (``stepId=step``:
from the top) and reads the answer: ``200`` the function returned; ``206`` ops — a step ran
(recorded as a native step is, and the function is called again at once, under the same
lease), a sleep, wait or invocation (``Blocked``), a step failed (retried alone:
``RetryStep``), or steps to run in parallel, each on a call of its own (``stepId=<hash>``),
after which every call of the run asks the SDK to plan rather than run
(``disable_immediate_execution``); anything else is the function's error, retried unless the
SDK says ``x-inngest-no-retry``. Outside dev every request is signed with the environment's
signing key and an answer is only believed when its signature checks out (a streamed one as
``http_wire.streamed_distrust`` says). Requests go out through ``http_client``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import msgspec

from tidings.engine.http_client import AppCaller, AppClient, CallFailed, HttpxClient, proxied
from tidings.engine.http_wire import (
    CallState,
    ProtocolError,
    display_name,
    error_of,
    invoke_of,
    parse_ops,
    retry_after,
    sleep_until,
    streamed_distrust,
    unwrap_stream,
    wait_of,
)
from tidings.engine.outcomes import (
    Blocked,
    Continue,
    ErrorJSON,
    Outcome,
    RetryStep,
    RunDone,
    RunFailed,
    Sleep,
)
from tidings.ids import now_ms
from tidings.keys import EnvSigningKeys, SigningKeys
from tidings.netguard import Policy
from tidings.runs.model import HTTP_QUEUE, FunctionRow, Run, StepRow
from tidings.sdk.context import _Interrupt
from tidings.signing import sign, verify
from tidings.storage.base import Storage

log = logging.getLogger("tidings.engine.http")
USER_AGENT = "tidings"


class HttpHost(Protocol):
    """The executor's side of a call (``executor._Host``), as this driver uses it."""

    blockers: list[Any]
    retry: RetryStep | None
    lost: bool

    @property
    def recorded(self) -> list[StepRow]: ...

    @property
    def attempts(self) -> dict[str, int]: ...

    def now(self) -> int: ...

    def block(self, blocker: Any) -> None: ...

    async def completed(self, step: str, name: str, output: bytes,
                        began: int | None = None) -> None: ...

    async def errored(self, step: str, name: str, error: dict[str, Any],
                      began: int | None = None, *, final: bool = False) -> bool: ...


UNSIGNED = "the app's answer is not signed with this environment's signing key; it was not believed"


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    distrust: str | None  # why the answer is not believed; None in dev or when it is signed

    @property
    def trusted(self) -> bool:
        return self.distrust is None


def step_url(url: str, step_id: str) -> str:
    """The function's URL aimed at ``step_id`` (its ``stepId`` parameter replaced)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "stepId"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("stepId", step_id)])))


def _failure(name: str, message: str, *, retriable: bool = True) -> RunFailed:
    return RunFailed({"name": name, "message": message}, retriable=retriable)


class HttpDriver:
    """Calls the functions of SDK apps (queue ``http``) at the URLs they registered."""

    MAX_CALLS = 100  # calls of a run under one lease; then it goes back to the queue

    def __init__(self, storage: Storage, keys: SigningKeys, *, dev: bool,
                 transport: httpx.AsyncBaseTransport | None = None,
                 timeout: float = 900.0, guard: Policy | None = None) -> None:
        self._storage = storage
        self._keys = keys
        self._dev = dev
        # Apps are reached only where the guard allows (``netguard``): by default open in dev
        # and guarded, with nothing allowed beyond public addresses, otherwise.
        guard = guard or Policy.for_mode(dev)
        self._http: AppCaller = (
            HttpxClient(timeout=timeout, transport=transport, guard=guard)
            if transport is not None or proxied() else AppClient(timeout=timeout, guard=guard))
        self._closing: asyncio.Task[None] | None = None

    def serves(self, fn: FunctionRow) -> bool:
        return fn.queue == HTTP_QUEUE and bool(fn.url)

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):  # no loop: nothing is open
            self._closing = asyncio.get_running_loop().create_task(self._http.aclose())

    async def call(self, fn: FunctionRow, host: HttpHost, *, run: Run, event: dict[str, Any],
                   events: list[dict[str, Any]]) -> Outcome | None:
        """Call the function until it pauses, fails or returns — while it only reports steps
        that ran, it is called again at once, as a native function goes on after a step (at
        most ``MAX_CALLS`` times under one lease); None when the lease was lost."""
        keys = None if self._dev else await self._keys.of_env(fn.env_id)
        if keys is None and not self._dev:
            log.warning("run %s: environment %s has no signing key (tidings keys create-signing):"
                        " the app will refuse the call", run.id, fn.env_id)
        planned = await self._storage.read(lambda tx: tx.one("run_planned", (run.id,)))
        state = CallState.of(run_id=run.id, attempt=run.attempt, retries=fn.retries,
                             force_plan=planned is not None, event=event, events=events,
                             recorded=host.recorded)
        for _ in range(self.MAX_CALLS):
            # The attempt of a step being retried, else the run's.
            state.attempt = max(host.attempts.values(), default=run.attempt)
            try:
                outcome = await self._answer(fn, host, state, keys, "step")
            except _Interrupt:
                outcome = None
            if host.lost:
                return None
            if outcome is not None:
                return outcome
            if host.blockers:
                return Blocked(tuple(host.blockers))
            if host.retry is not None:
                return host.retry
        return Continue(force_plan=state.force_plan)

    async def _answer(self, fn: FunctionRow, host: HttpHost, state: CallState,
                      keys: EnvSigningKeys | None, step_id: str) -> Outcome | None:
        """Make one request and take in its answer; None when the run goes on."""
        began = host.now()
        reply = await self._post(fn, state, keys, step_id,
                                 None if step_id == "step" else host.attempts.get(step_id, 0))
        if isinstance(reply, RunFailed):
            return reply
        if reply.status >= 300 or reply.status < 200:
            return self._failed(reply, host.now())
        if reply.distrust is not None:
            return _failure("UntrustedAnswer", reply.distrust)
        if "x-inngest-sdk" not in reply.headers:
            return _failure("NotAnSDK", f"the answer ({reply.status}) has no X-Inngest-SDK "
                            "header: something other than an Inngest SDK answered")
        if reply.status != 206:
            return self._done(reply.body)
        try:
            ops = parse_ops(reply.body)
        except ProtocolError as exc:
            return _failure("ProtocolError", str(exc))
        if not ops:
            return _failure("ProtocolError", "the app answered 206 with no ops")
        planned = []
        for op in ops:
            if op.get("op") == "StepPlanned":
                if step_id == "step":
                    planned.append(op)
                continue
            outcome = await self._op(host, state, op, began, reply)
            if outcome is not None:
                return outcome
        if planned:
            if not state.force_plan:
                await self._storage.write(
                    lambda tx: tx.run("plan_run", (state.run_id, now_ms())))
                state.force_plan = True
            results = await asyncio.gather(
                *(self._answer(fn, host, state, keys, op["id"]) for op in planned),
                return_exceptions=True)
            outcomes: list[Outcome | None] = []
            for result in results:
                if isinstance(result, BaseException):
                    raise result  # every call has ended: nothing runs on unattended
                outcomes.append(result)
            return next((o for o in outcomes if o is not None), None)
        return None

    async def _op(self, host: HttpHost, state: CallState, op: dict[str, Any], began: int,
                  reply: Reply) -> Outcome | None:
        kind, step, name, now = op.get("op"), op["id"], display_name(op), host.now()
        try:
            if kind in ("StepRun", "Step"):
                data = op.get("data")
                await host.completed(step, name, msgspec.json.encode({"data": data}), began)
                state.remember(step, {"data": data})
            elif kind in ("StepError", "StepFailed"):
                # StepFailed is the SDK's own "out of attempts"; a signed no-retry ends it too.
                final = kind == "StepFailed" or reply.headers.get(
                    "x-inngest-no-retry", "").lower() == "true"
                error = error_of(op.get("error"))
                if await host.errored(step, name, error, began, final=final):
                    state.remember(step, {"error": error})
                elif host.retry is not None:
                    at = retry_after(reply.headers.get("retry-after"), now)
                    if at is not None:
                        host.retry = RetryStep(step, at)
            elif kind == "Sleep":
                host.block(Sleep(step, name, sleep_until(op, now)))
            elif kind == "WaitForEvent":
                host.block(wait_of(op, now))
            elif kind == "InvokeFunction":
                host.block(invoke_of(op, now))
            elif kind == "RunComplete":
                return self._done(msgspec.json.encode(op.get("data")))
            elif kind not in (None, "None"):
                return _failure("UnsupportedStep", f"Tidings does not run {kind} steps "
                                f"(step {name!r})", retriable=False)
        except ProtocolError as exc:
            return _failure("ProtocolError", f"step {name!r}: {exc}", retriable=False)
        return None

    def _done(self, body: bytes) -> Outcome:
        text = body.strip() or b"null"
        try:
            msgspec.json.decode(text)
        except msgspec.DecodeError:
            return _failure("ProtocolError", "the function's result is not JSON")
        return RunDone(text)

    def _failed(self, reply: Reply, now: int) -> RunFailed:
        try:
            answer = msgspec.json.decode(reply.body) if reply.body.strip() else None
        except msgspec.DecodeError:
            answer = reply.body.decode(errors="replace")[:2000]
        error: ErrorJSON = error_of(answer, "HTTPError")
        if not (isinstance(answer, dict) and answer.get("name")):
            error["message"] = f"the app answered {reply.status}: {error['message']}".rstrip(": ")
        # Only a signed answer may stop the retries or move them.
        if not reply.trusted:
            return RunFailed(error)
        retriable = reply.headers.get("x-inngest-no-retry", "").lower() != "true"
        return RunFailed(error, retriable=retriable,
                         retry_at=retry_after(reply.headers.get("retry-after"), now))

    async def _post(self, fn: FunctionRow, state: CallState, keys: EnvSigningKeys | None,
                    step_id: str, attempt: int | None) -> Reply | RunFailed:
        assert fn.url is not None
        body = state.body(step_id, attempt)
        headers = {"content-type": "application/json", "user-agent": USER_AGENT,
                   "x-run-id": state.run_id, "x-inngest-step-id": step_id}
        if keys is not None:
            headers["x-inngest-signature"] = sign(body, keys.current)
            if keys.branch is not None:
                headers["x-inngest-env"] = keys.branch
        url = step_url(fn.url, step_id)
        try:
            # A streaming SDK signs as its answer begins: soon after the request goes out.
            answered = int(time.time())
            reply = await self._http.post(url, body, headers)
        except CallFailed as exc:
            return _failure("AppUnreachable", f"cannot call {url}: {exc}")
        status, raw, found = reply.status, reply.body, reply.headers
        streamed = status == 201
        inner: dict[str, str] = {}
        answer = raw
        if streamed:
            try:
                status, inner, answer = unwrap_stream(raw)
            except ProtocolError as exc:
                return _failure("ProtocolError", str(exc))
        if self._dev:
            distrust = None
        elif keys is None:
            distrust = UNSIGNED
        elif streamed:
            distrust = streamed_distrust(url, found, inner, answer, keys.all, answered=answered)
        else:
            distrust = None if verify(raw, found.get("x-inngest-signature"), keys.all) else UNSIGNED
        return Reply(status, {**found, **inner}, answer, distrust)
