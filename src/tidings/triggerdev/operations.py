"""Background fetches: ``io.backgroundFetch``, ``io.backgroundFetchResponse`` and
``io.backgroundPoll``, whose HTTP request Tidings performs instead of the app.

The SDK creates the task with an ``operation`` (``fetch``, ``fetch-response``, ``fetch-poll``)
and its request as ``params``; the task stays ``RUNNING`` and the SDK answers
``RESUME_WITH_TASK``. The driver then makes one attempt (``attempt``): a response that settles
the task completes it (``fetch``: the body, as JSON when it parses; ``fetch-response``:
``{status, headers, body}``; ``fetch-poll``: the body once the response matches
``responseFilter``) or fails it, and the job is executed again, reading the task from its
cache. A response whose status matches a ``retry`` pattern (``429``, ``500-599``, ``5xx``) is
tried again at the time its strategy gives (``backoff``: v2's retry formula over the task's
attempts; ``headers``: the rate-limit reset the response names), kept as the task's
``delay_until`` so that an early call does not try before it; a poll asks again every
``interval`` seconds until its ``timeout``.

``check`` validates the params when the task is created (a 400 naming the field).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import msgspec

from tidings.errors import ConfigError, RequestRejected
from tidings.functions.filters import check_filter, filter_matches

FETCH, FETCH_RESPONSE, FETCH_POLL = "fetch", "fetch-response", "fetch-poll"
OPERATIONS = (FETCH, FETCH_RESPONSE, FETCH_POLL)
DEFAULT_TIMEOUT_MS = 60_000  # one request, when the task names none
MAX_TIMEOUT_MS = 300_000
# v2's defaults for a backoff (``calculateRetryAt``).
BACKOFF = {"limit": 5, "factor": 1.8, "minTimeoutInMs": 1000, "maxTimeoutInMs": 60_000,
           "randomize": True}
RESET_FORMATS = ("unix_timestamp", "unix_timestamp_in_ms", "iso_8601")
PATTERN_RE = re.compile(r"[1-5]xx|[1-5][0-9]{2}(-[1-5][0-9]{2})?")
MAX_BODY_CHARS = 1_000_000


@dataclass(frozen=True, slots=True)
class Settled:
    """The attempt settled the task: ``output`` completes it, or ``error`` fails it."""

    output: Any = None
    error: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Later:
    """Try again at ``at`` (epoch ms); ``why`` is what the attempt got."""

    at: int
    why: str


def check(operation: Any, params: Any) -> None:
    """The operation's params as the SDK sends them; a 400 naming the field otherwise."""
    if operation not in OPERATIONS:
        raise RequestRejected(f"operation: one of {', '.join(OPERATIONS)}", status=422)
    if not isinstance(params, dict):
        raise RequestRejected("params: the request of the background fetch (url, requestInit)")
    url = params.get("url")
    if not isinstance(url, str) or not re.match(r"https?://[^/\s]+", url):
        raise RequestRejected("params.url: an http(s) URL")
    _request_init(params.get("requestInit"))
    if operation == FETCH_POLL:
        for field, low, high in (("interval", 10, 600), ("timeout", 30, 3600)):
            value = params.get(field)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not low <= value <= high):
                raise RequestRejected(f"params.{field}: whole seconds from {low} to {high}")
        _response_filter(params.get("responseFilter"))
        _timeout(params.get("requestTimeout"), "params.requestTimeout")
        return
    _timeout(params.get("timeout"), "params.timeout")
    retry = params.get("retry")
    if retry is None:
        return
    if not isinstance(retry, dict):
        raise RequestRejected("params.retry: an object of status patterns (429, 500-599, 5xx) "
                              "and their strategies")
    for pattern, strategy in retry.items():
        where = f"params.retry.{pattern}"
        if not PATTERN_RE.fullmatch(pattern):
            raise RequestRejected(f"{where}: a status pattern such as 429, 500-599 or 5xx")
        if not isinstance(strategy, dict) or strategy.get("strategy") not in ("backoff",
                                                                              "headers"):
            raise RequestRejected(f"{where}.strategy: backoff or headers")
        if strategy["strategy"] == "headers":
            for field in ("limitHeader", "remainingHeader", "resetHeader"):
                if not isinstance(strategy.get(field), str):
                    raise RequestRejected(f"{where}.{field}: a header name")
            if strategy.get("resetFormat", "unix_timestamp") not in RESET_FORMATS:
                raise RequestRejected(f"{where}.resetFormat: one of {', '.join(RESET_FORMATS)}"
                                      " (Tidings reads no other)")
        else:
            _backoff(strategy, where)
        if strategy.get("bodyFilter") is not None:
            _filter(strategy["bodyFilter"], f"{where}.bodyFilter")


def _request_init(init: Any) -> None:
    if init is None:
        return
    if not isinstance(init, dict):
        raise RequestRejected("params.requestInit: an object of method, headers and body")
    method = init.get("method", "GET")
    if not isinstance(method, str) or not re.fullmatch(r"[A-Za-z]{1,16}", method):
        raise RequestRejected("params.requestInit.method: an HTTP method")
    headers = init.get("headers") or {}
    if not isinstance(headers, dict) or not all(
            isinstance(v, str) or _redacted(v) is not None for v in headers.values()):
        raise RequestRejected("params.requestInit.headers: an object of header values (text "
                              "or redactString)")
    body = init.get("body")
    if body is not None and not isinstance(body, str):
        raise RequestRejected("params.requestInit.body: text")


def _redacted(value: Any) -> str | None:
    """A ``redactString`` value, put back together (v2 kept it hidden in its logs only)."""
    if not isinstance(value, dict) or value.get("__redactedString") is not True:
        return None
    strings, values = value.get("strings"), value.get("interpolations")
    if not isinstance(strings, list) or not isinstance(values, list) or not all(
            isinstance(s, str) for s in [*strings, *values]) or len(strings) != len(values) + 1:
        return None
    return "".join(s + (values[i] if i < len(values) else "") for i, s in enumerate(strings))


def _timeout(value: Any, where: str) -> None:
    if value is None:
        return
    duration = value.get("durationInMs") if isinstance(value, dict) else None
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not (
            0 < duration <= MAX_TIMEOUT_MS):
        raise RequestRejected(f"{where}.durationInMs: milliseconds, at most {MAX_TIMEOUT_MS}")
    if value.get("retry") is not None:
        _backoff(value["retry"], f"{where}.retry")


def _backoff(options: Any, where: str) -> None:
    if not isinstance(options, dict):
        raise RequestRejected(f"{where}: retry options (limit, factor, minTimeoutInMs, ...)")
    for field in ("limit", "factor", "minTimeoutInMs", "maxTimeoutInMs"):
        value = options.get(field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or value < 0):
            raise RequestRejected(f"{where}.{field}: a number, not negative")


def _filter(pattern: Any, where: str) -> None:
    try:
        check_filter(pattern, where)
    except ConfigError as exc:
        raise RequestRejected(exc.message) from None


def _response_filter(value: Any) -> None:
    if not isinstance(value, dict):
        raise RequestRejected("params.responseFilter: an object of status, body and headers")
    status = value.get("status")
    if status is not None and (not isinstance(status, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in status)):
        raise RequestRejected("params.responseFilter.status: a list of status codes")
    for field in ("body", "headers"):
        if value.get(field) is not None:
            _filter(value[field], f"params.responseFilter.{field}")


def retry_at(options: dict[str, Any], attempts: int, now: int) -> int | None:
    """v2's ``calculateRetryAt``: when to try again after ``attempts`` failed ones (None: no
    more tries)."""
    merged = {**BACKOFF, **{k: v for k, v in options.items() if v is not None}}
    if attempts + 1 >= merged["limit"]:
        return None
    spread = random.random() + 1 if merged["randomize"] else 1
    delay = round(spread * max(merged["minTimeoutInMs"], 1)
                  * merged["factor"] ** max(attempts - 1, 0))
    return now + int(min(delay, merged["maxTimeoutInMs"]))


def _matches(pattern: str, status: int) -> bool:
    if pattern.endswith("xx"):
        return status // 100 == int(pattern[0])
    low, _, high = pattern.partition("-")
    return int(low) <= status <= int(high or low)


def _reset_at(value: str | None, form: str) -> int | None:
    if not value:
        return None
    try:
        if form == "iso_8601":
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return int(moment.timestamp() * 1000) if moment.tzinfo else None
        number = int(value)
    except ValueError:
        return None
    return number if form == "unix_timestamp_in_ms" else number * 1000


async def attempt(http: httpx.AsyncClient, operation: str, params: dict[str, Any],
                  attempts: int, started_at: int, now: int) -> Settled | Later:
    """One request of the task (``attempts`` made before it): what it settles, or when to try
    again."""
    init = params.get("requestInit") or {}
    method = str(init.get("method", "GET")).upper()
    headers = {k: v if isinstance(v, str) else (_redacted(v) or "")
               for k, v in (init.get("headers") or {}).items()}
    timing = params.get("requestTimeout" if operation == FETCH_POLL else "timeout") or {}
    seconds = float(timing.get("durationInMs", DEFAULT_TIMEOUT_MS)) / 1000
    url = str(params["url"])
    try:
        response = await http.request(method, url, headers=headers, content=init.get("body"),
                                      timeout=seconds)
    except httpx.TimeoutException:
        again = retry_at(timing.get("retry") or {"limit": 0}, attempts, now)
        why = f"{method} {url} timed out after {seconds:g} s"
        return Later(again, why) if again is not None else _error("FetchTimeout", why)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return _error("FetchError", f"{method} {url} failed: {exc or type(exc).__name__}")
    body = _body(response)
    if operation == FETCH_POLL:
        return _polled(params, response, body, started_at, now, f"{method} {url}")
    if not response.is_success:
        later = _retried(params.get("retry") or {}, response, body, attempts, now)
        why = f"{method} {url} answered {response.status_code}"
        if later is not None:
            return Later(later, why)
        return Settled(error={"name": "FetchError", "message": why,
                              "status": response.status_code, "body": body})
    if operation == FETCH_RESPONSE:
        return Settled(output={"status": response.status_code,
                               "headers": dict(response.headers.items()), "body": body})
    return Settled(output=body)


def _error(name: str, message: str) -> Settled:
    return Settled(error={"name": name, "message": message})


def _body(response: httpx.Response) -> Any:
    """The response body as JSON when it parses, as text otherwise."""
    text = response.text[:MAX_BODY_CHARS]
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        return text


def _retried(retry: dict[str, Any], response: httpx.Response, body: Any, attempts: int,
             now: int) -> int | None:
    """When a failed response is tried again by the first strategy its status matches."""
    for pattern, strategy in retry.items():
        if not _matches(pattern, response.status_code):
            continue
        wanted = strategy.get("bodyFilter")
        if wanted is not None and not filter_matches(wanted, body):
            return None
        if strategy["strategy"] == "headers":
            if response.headers.get(strategy["remainingHeader"]) not in (None, "0"):
                return now
            return _reset_at(response.headers.get(strategy["resetHeader"]),
                             strategy.get("resetFormat", "unix_timestamp"))
        return retry_at(strategy, attempts, now)
    return None


def _polled(params: dict[str, Any], response: httpx.Response, body: Any, started_at: int,
            now: int, what: str) -> Settled | Later:
    wanted = params.get("responseFilter") or {}
    statuses = wanted.get("status")
    headers = {k.lower(): v for k, v in response.headers.items()}
    if ((statuses is None or response.status_code in statuses)
            and (wanted.get("body") is None or filter_matches(wanted["body"], body))
            and (wanted.get("headers") is None or filter_matches(wanted["headers"], headers))):
        return Settled(output=body)
    interval = int(params.get("interval") or 10) * 1000
    deadline = started_at + int(params.get("timeout") or 600) * 1000
    if now + interval > deadline:
        return _error("PollTimeout", f"{what}: no response matched the responseFilter within "
                      f"{(deadline - started_at) // 1000} s")
    return Later(now + interval, f"{what} answered {response.status_code}, not matching")
