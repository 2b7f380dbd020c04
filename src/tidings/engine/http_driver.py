"""The HTTP driver: calls functions served by official Inngest SDK apps over the Inngest call
protocol, on the executor of queue ``http``.

A call ``POST``s the run's event and memoized steps to the function's URL (``stepId=step``:
from the top) and reads the answer: ``200`` the function returned; ``206`` ops — a step ran
(recorded as a native step is, and the function is called again at once, under the same
lease), a sleep, wait or invocation (``Blocked``), a step failed (retried alone:
``RetryStep``), an inference for Tidings to make (``ai_infer``), or steps to run in parallel,
each on a request of its own (``stepId=<hash>``, with ``disable_immediate_execution`` as
Inngest sets it while a group runs); anything else is the function's error, retried unless the
SDK says ``x-inngest-no-retry``. After a group the function is called from the top again with
``disable_immediate_execution`` off, so a lone step that follows runs in that very request, as
on Inngest (which clears the flag whenever it schedules a discovery request with no step of
the group pending); a race group asks again after each of its steps (``_group``).

Outside dev every request is signed with the environment's signing key and an answer is only
believed when its signature checks out (a streamed one as ``http_wire.streamed_distrust``
says). Requests go out through ``http_client``; a failed call is logged with the run's id.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import msgspec

from tidings.calls.error_records import ErrorJSON, error_of
from tidings.calls.host import Host, Interrupt
from tidings.calls.outcomes import (
    Blocked,
    Continue,
    Outcome,
    RunDone,
    RunFailed,
    Sleep,
)
from tidings.engine import ai_infer
from tidings.engine.ai_infer import BadInference, inference_of
from tidings.engine.http_client import AppCaller, AppClient, CallFailed, HttpxClient, proxied
from tidings.engine.http_wire import (
    CallState,
    ProtocolError,
    decode,
    display_name,
    invoke_of,
    parse_ops,
    retry_after,
    sleep_until,
    step_kind,
    streamed_distrust,
    unwrap_stream,
    wait_of,
)
from tidings.functions.model import FunctionRow
from tidings.keys import EnvSigningKeys, SigningKeys
from tidings.netguard import Policy
from tidings.observe import metrics, tracing
from tidings.runs.model import HTTP_QUEUE, Run
from tidings.signing import sign, verify

log = logging.getLogger("tidings.engine.http")
USER_AGENT = "tidings"


UNSIGNED = "the app's answer is not signed with this environment's signing key; it was not believed"


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    distrust: str | None  # why the answer is not believed; None in dev or when it is signed
    attempt: int = 0  # the ``ctx.attempt`` of the call it answers

    @property
    def trusted(self) -> bool:
        return self.distrust is None


@functools.lru_cache(maxsize=4096)
def step_url(url: str, step_id: str) -> str:
    """The function's URL aimed at ``step_id`` (its ``stepId`` parameter replaced). Every call
    of a run asks for one of a few (most for ``step``): each is built once."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "stepId"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("stepId", step_id)])))


def _failure(name: str, message: str, *, retriable: bool = True) -> RunFailed:
    return RunFailed({"name": name, "message": message}, retriable=retriable)


async def _settle_all(calls: Iterable[Awaitable[Outcome | None]]) -> list[Outcome | None]:
    """Await every call, then raise the first exception if one raised: nothing is left
    running unattended."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]


def _first(outcomes: list[Outcome | None]) -> Outcome | None:
    return next((o for o in outcomes if o is not None), None)


@dataclass(slots=True)
class _Call:
    """One call of a run: the requests it makes share what they learn."""

    fn: FunctionRow
    host: Host
    state: CallState
    keys: EnvSigningKeys | None
    running: set[str] = field(default_factory=set)  # steps with a request of their own out
    held: set[str] = field(default_factory=set)  # steps that ran without a result: not again
    last: Reply | None = None  # the latest answer, for the log line of a failed call


def _race(op: dict[str, Any]) -> bool:
    opts = op.get("opts")
    return isinstance(opts, dict) and opts.get("parallelMode") == "race"


class HttpDriver:
    """Calls the functions of SDK apps (queue ``http``) at the URLs they registered."""

    MAX_CALLS = 100  # calls of a run under one lease; then it goes back to the queue

    def __init__(self, keys: SigningKeys, *, dev: bool,
                 transport: httpx.AsyncBaseTransport | None = None,
                 timeout: float = 900.0, guard: Policy | None = None,
                 connect: AppCaller | None = None) -> None:
        self._keys = keys
        # Functions of apps connected over a WebSocket (``ws://connect?…`` URLs) are called
        # through the Connect hub: the same call, another road to the app.
        self._connect = connect
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

    async def call(self, fn: FunctionRow, host: Host, *, run: Run, event: dict[str, Any],
                   events: list[dict[str, Any]]) -> Outcome | None:
        """Call the function until it pauses, fails or returns — while it only reports steps
        that ran, it is called again at once, as a native function goes on after a step (at
        most ``MAX_CALLS`` times under one lease); None when the lease was lost."""
        keys = None if self._dev else await self._keys.of_env(fn.env_id)
        if keys is None and not self._dev:
            log.warning("run %s: environment %s has no signing key (tidings keys create-signing):"
                        " the app will refuse the call", run.id, fn.env_id)
        state = CallState.of(run_id=run.id, attempt=run.attempt, retries=fn.retries,
                             event=event, events=events, recorded=host.recorded)
        call = _Call(fn, host, state, keys)
        for _ in range(self.MAX_CALLS):
            state.attempt = host.attempt
            try:
                outcome = await self._answer(call, "step")
            except Interrupt:
                outcome = None
            if host.lost:
                return None
            if isinstance(outcome, RunFailed):
                _log_failed(run, fn, outcome, call.last)
            if outcome is not None:
                return outcome
            if host.blockers:
                return Blocked(tuple(host.blockers))
            if host.retry is not None:
                return host.retry
        return Continue()

    async def _answer(self, call: _Call, step_id: str, *, plan: bool = False) -> Outcome | None:
        """Make one request and take in its answer; None when the run goes on. ``plan``: the
        request runs one of several steps the SDK reported together (Inngest then sets
        ``disable_immediate_execution``, which a request aimed at one step ignores)."""
        host = call.host
        began = host.now()
        reply = await self._post(call, step_id, plan,
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
        planned, inferences = [], []
        for op in ops:
            kind = op.get("op")
            if kind == "StepPlanned":
                if step_id == "step":
                    planned.append(op)
                continue
            if kind == "AIGateway":
                inferences.append(op)
                continue
            outcome = await self._op(host, call.state, op, began, reply)
            if outcome is not None:
                return outcome
        if inferences:
            outcome = _first(await _settle_all(
                self._infer(call, op, began) for op in inferences))
            if outcome is not None:
                return outcome
        if planned:
            return await self._group(call, planned, plan=len(ops) > 1)
        return None

    async def _group(self, call: _Call, planned: list[dict[str, Any]], *,
                     plan: bool) -> Outcome | None:
        """Run planned steps, each on a request of its own, concurrently; a step already
        running or recorded, or that failed in this call, is not run again. When a step of a
        race group (``parallelMode: "race"``) is recorded, the function is asked at once what
        comes next, so that each branch goes on at its own pace (Inngest: a discovery request
        after every race step, instead of one when the whole group is done)."""
        tasks: dict[asyncio.Task[Outcome | None], dict[str, Any] | None] = {}

        def start(ops: list[dict[str, Any]]) -> None:
            for op in ops:
                step = op["id"]
                if step in call.running or step in call.held or step in call.state.steps:
                    continue
                call.running.add(op["id"])
                tasks[asyncio.ensure_future(self._answer(call, op["id"], plan=plan))] = op

        start(planned)
        outcome: Outcome | None = None
        failure: BaseException | None = None
        while tasks:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                op = tasks.pop(task)
                if op is not None:
                    call.running.discard(op["id"])
                    if op["id"] not in call.state.steps:
                        call.held.add(op["id"])  # e.g. an attempt failed: retried later
                if task.exception() is not None:
                    failure = failure or task.exception()
                    continue
                outcome = outcome or task.result()
                if (op is not None and _race(op) and op["id"] in call.state.steps
                        and outcome is None and failure is None and not call.host.lost):
                    tasks[asyncio.ensure_future(self._answer(call, "step"))] = None
        if failure is not None:
            raise failure  # every request has ended: nothing runs on unattended
        return outcome

    async def _infer(self, call: _Call, op: dict[str, Any], began: int) -> Outcome | None:
        """A ``step.ai.infer``: Tidings makes the request (``ai_infer``) and records its
        answer as the step's output, or its failure as an attempt of the step."""
        step, name = op["id"], display_name(op)
        if step in call.state.steps or step in call.running or step in call.held:
            return None  # a race group's branches report it again
        call.running.add(step)
        try:
            return await self._inference(call, step, name, op, began)
        finally:
            call.running.discard(step)
            if step not in call.state.steps:
                call.held.add(step)

    async def _inference(self, call: _Call, step: str, name: str, op: dict[str, Any],
                         began: int) -> Outcome | None:
        host = call.host
        try:
            request = inference_of(op.get("opts"))
        except BadInference as exc:
            error: ErrorJSON = {"name": ai_infer.ERROR_NAME,
                                "message": f"step.ai.infer {name!r} cannot be sent: {exc}"}
            log.warning("run %s: %s", call.state.run_id, error["message"])
            if await host.errored(step, name, error, began, final=True, kind="ai"):
                call.state.remember(step, {"error": error})
            return None
        answer = await ai_infer.infer(self._http, request)
        if answer.output is not None:
            await host.completed(step, name, answer.output, began, kind="ai")
            call.state.remember(step, msgspec.json.decode(answer.output))
            return None
        assert answer.error is not None
        log.warning("run %s: step.ai.infer %r (%s) failed: %s", call.state.run_id, name,
                    request.where, answer.error["message"])
        if await host.errored(step, name, answer.error, began, kind="ai"):
            call.state.remember(step, {"error": answer.error})
        return None

    async def _op(self, host: Host, state: CallState, op: dict[str, Any], began: int,
                  reply: Reply) -> Outcome | None:
        kind, step, name, now = op.get("op"), op["id"], display_name(op), host.now()
        try:
            if kind in ("StepRun", "Step"):
                data = op.get("data")
                await host.completed(step, name, msgspec.json.encode({"data": data}), began,
                                     kind=step_kind(op))
                state.remember(step, {"data": data})
            elif kind in ("StepError", "StepFailed"):
                # StepFailed is the SDK's own "out of attempts"; a signed no-retry ends it too.
                final = kind == "StepFailed" or reply.headers.get(
                    "x-inngest-no-retry", "").lower() == "true"
                error = error_of(op.get("error"))
                if await host.errored(step, name, error, began, final=final,
                                      kind=step_kind(op), attempt=reply.attempt):
                    state.remember(step, {"error": error})
                elif host.retry is not None:
                    at = retry_after(reply.headers.get("retry-after"), now)
                    if at is not None:
                        host.retry = replace(host.retry, retry_at=at)
            elif kind in ("Sleep", "WaitForEvent", "InvokeFunction"):
                if any(b.step == step for b in host.blockers):
                    return None  # a race group's branches report it again
                if kind == "Sleep":
                    host.block(Sleep(step, name, sleep_until(op, now)))
                elif kind == "WaitForEvent":
                    host.block(wait_of(op, now))
                else:
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
            decode(text, "the function's result")
        except ProtocolError as exc:
            return _failure("ProtocolError", str(exc))
        return RunDone(text)

    def _failed(self, reply: Reply, now: int) -> RunFailed:
        try:
            answer = decode(reply.body, "the error") if reply.body.strip() else None
        except ProtocolError:
            answer = reply.body.decode(errors="replace")[:2000]
        error: ErrorJSON = error_of(answer, "HTTPError")
        if not (isinstance(answer, dict) and answer.get("name")):
            error["message"] = f"the app answered {reply.status}: {error['message']}".rstrip(": ")
        # What Inngest's executor says of a failed call in ``function.failed``.
        reason = f"invalid status code: {reply.status}"
        # Only a signed answer may stop the retries or move them.
        if not reply.trusted:
            return RunFailed(error, reason=reason)
        retriable = reply.headers.get("x-inngest-no-retry", "").lower() != "true"
        return RunFailed(error, retriable=retriable,
                         retry_at=retry_after(reply.headers.get("retry-after"), now),
                         reason=reason)

    def _caller(self, url: str) -> AppCaller:
        if not url.startswith(("ws://", "wss://")):
            return self._http
        if self._connect is None:
            raise CallFailed("this process has no Connect gateway to reach the app's workers")
        return self._connect

    async def _post(self, call: _Call, step_id: str, plan: bool,
                    attempt: int | None) -> Reply | RunFailed:
        fn, keys, host = call.fn, call.keys, call.host
        assert fn.url is not None
        body = call.state.body(step_id, attempt, plan=plan)
        if call.state.used_api and not await host.flushed():
            # The SDK reads the steps from the API, maybe from another server process: every
            # step this call recorded must be in the database first, or it would run again.
            raise Interrupt()
        # The steps the app reported so far are written while this request runs (it may run
        # long): a process killed meanwhile has recorded them, and they do not run again.
        host.flush_soon()
        headers = {"content-type": "application/json", "user-agent": USER_AGENT,
                   "x-run-id": call.state.run_id, "x-inngest-step-id": step_id}
        url = step_url(fn.url, step_id)
        # A Connect worker's socket is authenticated: the hub reads neither the signature nor
        # the branch, and HMAC-ing every call's body for nothing is CPU the server lacks.
        if keys is not None and not url.startswith(("ws://", "wss://")):
            headers["x-inngest-signature"] = sign(body, keys.current)
            if keys.branch is not None:
                headers["x-inngest-env"] = keys.branch
        call.last = None
        began = time.perf_counter()
        with tracing.client_span(call.state.run_id, "POST", url, headers) as span:
            try:
                # A streaming SDK signs as its answer begins: soon after the request goes out.
                answered = int(time.time())
                reply = await self._caller(url).post(url, body, headers)
            except CallFailed as exc:
                tracing.answered(span, None)
                metrics.sdk_request(fn.app_id, fn.slug, "unreachable",
                                    time.perf_counter() - began)
                return _failure("AppUnreachable", f"cannot call {url}: {exc}")
            tracing.answered(span, reply.status)
        took = time.perf_counter() - began
        status, raw, found = reply.status, reply.body, reply.headers
        streamed = status == 201
        inner: dict[str, str] = {}
        answer = raw
        if streamed:
            try:
                status, inner, answer = unwrap_stream(raw)
            except ProtocolError as exc:
                return _failure("ProtocolError", str(exc))
        if self._dev or reply.authenticated:
            distrust = None
        elif keys is None:
            distrust = UNSIGNED
        elif streamed:
            distrust = streamed_distrust(url, found, inner, answer, keys.all, answered=answered)
        else:
            distrust = None if verify(raw, found.get("x-inngest-signature"), keys.all) else UNSIGNED
        call.last = Reply(status, {**found, **inner}, answer, distrust,
                          call.state.attempt if attempt is None else attempt)
        metrics.sdk_request(fn.app_id, fn.slug, "success" if 200 <= status < 300 else "error",
                            took)
        return call.last


def _log_failed(run: Run, fn: FunctionRow, outcome: RunFailed, reply: Reply | None) -> None:
    """A failed call to an SDK app, at WARNING: its status and reason, and the start of the
    answer (500 bytes), which says what went wrong when the app's answer could not be taken
    in. The run's ids come bound (``engine/telemetry.py``)."""
    name, message = outcome.error.get("name"), outcome.error.get("message")
    extra: dict[str, Any] = {"reason": name}
    where = ""
    if reply is not None:
        extra["status"] = reply.status
        extra["answer"] = reply.body[:500].decode(errors="replace")
        where = f" (status {reply.status})"
    log.warning("run %s: the call to %s failed%s, attempt %d: %s: %s", run.id, fn.slug, where,
                run.attempt + 1, name, message, extra=extra)
