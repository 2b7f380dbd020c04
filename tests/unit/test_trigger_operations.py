"""Background fetches (``triggerdev/operations.py``), one attempt at a time, against a real HTTP
server on loopback: the parts of the retry options the v2 app test does not reach (the
``headers`` strategy, ``bodyFilter``, a timeout with its retry, ``redactString`` headers, a
poll's deadline)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests import loopback
from tidings.triggerdev import operations
from tidings.triggerdev.operations import FETCH, FETCH_POLL, Later, Settled

NOW = 1_800_000_000_000
RESET = 1_800_000_123  # seconds: what /limited names as its reset


class Remote:
    """``/limited``: 429 with rate-limit headers; ``/busy``: 503 with ``{"retry": bool}`` as
    the query says; ``/slow``: answers after a second; ``/echo``: the request's headers;
    ``/pending``: a job still running."""

    def __init__(self) -> None:
        self.release = threading.Event()

        remote = self

        class Handler(loopback.Handler):
            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                if path == "/limited":
                    return self.answer(429, json.dumps({"error": "slow down"}), headers={
                        "x-limit": "10", "x-remaining": "0", "x-reset": str(RESET)})
                if path == "/busy":
                    return self.answer(503, json.dumps({"retry": query == "retry=yes"}))
                if path == "/slow":
                    remote.release.wait(5)
                    return self.answer(200, json.dumps({"late": True}))
                if path == "/echo":
                    return self.answer(200, json.dumps({k.lower(): v
                                                        for k, v in self.headers.items()}))
                return self.answer(200, json.dumps({"state": "pending"}))

        self.server = loopback.Loopback(Handler)
        self.url = self.server.url


@pytest.fixture(scope="module")
def remote() -> Iterator[Remote]:
    found = Remote()
    yield found
    found.release.set()
    found.server.close()


async def attempt(operation: str, params: dict[str, Any], attempts: int = 0,
                  started_at: int = NOW) -> Settled | Later:
    async with httpx.AsyncClient() as http:
        return await operations.attempt(http, operation, params, attempts, started_at, NOW)


async def test_the_headers_strategy_tries_again_at_the_reset_the_response_names(
        remote: Remote) -> None:
    strategy = {"strategy": "headers", "limitHeader": "x-limit",
                "remainingHeader": "x-remaining", "resetHeader": "x-reset"}

    limited = await attempt(FETCH, {"url": f"{remote.url}/limited",
                                    "retry": {"429": strategy}})
    unmatched = await attempt(FETCH, {"url": f"{remote.url}/limited",
                                      "retry": {"5xx": strategy}})

    assert limited == Later(RESET * 1000, f"GET {remote.url}/limited answered 429")
    assert isinstance(unmatched, Settled) and unmatched.error is not None
    assert (unmatched.error["name"], unmatched.error["status"]) == ("FetchError", 429)


async def test_a_body_filter_decides_whether_a_failure_is_retried(remote: Remote) -> None:
    retry = {"500-599": {"strategy": "backoff", "limit": 3, "minTimeoutInMs": 100,
                         "factor": 2, "randomize": False, "bodyFilter": {"retry": [True]}}}

    wanted = await attempt(FETCH, {"url": f"{remote.url}/busy?retry=yes", "retry": retry},
                           attempts=1)
    refused = await attempt(FETCH, {"url": f"{remote.url}/busy?retry=no", "retry": retry})
    spent = await attempt(FETCH, {"url": f"{remote.url}/busy?retry=yes", "retry": retry},
                          attempts=2)

    assert wanted == Later(NOW + 100, f"GET {remote.url}/busy?retry=yes answered 503")
    assert isinstance(refused, Settled) and refused.error is not None
    assert refused.error["body"] == {"retry": False}
    assert isinstance(spent, Settled) and spent.error is not None  # the limit reached


async def test_a_request_timing_out_is_tried_again_with_its_timeout_retry(
        remote: Remote) -> None:
    timeout = {"durationInMs": 200, "retry": {"limit": 2, "minTimeoutInMs": 50,
                                              "randomize": False}}

    first = await attempt(FETCH, {"url": f"{remote.url}/slow", "timeout": timeout})
    last = await attempt(FETCH, {"url": f"{remote.url}/slow", "timeout": timeout},
                         attempts=1)

    assert first == Later(NOW + 50, f"GET {remote.url}/slow timed out after 0.2 s")
    assert last == Settled(error={"name": "FetchTimeout",
                                  "message": f"GET {remote.url}/slow timed out after 0.2 s"})


async def test_redacted_headers_are_sent_as_written(remote: Remote) -> None:
    secret = {"__redactedString": True, "strings": ["Bearer ", ""], "interpolations": ["s3"]}

    echoed = await attempt(FETCH, {"url": f"{remote.url}/echo", "requestInit": {
        "headers": {"authorization": secret, "x-plain": "p"}}})

    assert isinstance(echoed, Settled) and isinstance(echoed.output, dict)
    assert (echoed.output["authorization"], echoed.output["x-plain"]) == ("Bearer s3", "p")


async def test_a_poll_asks_again_every_interval_until_its_timeout(remote: Remote) -> None:
    params = {"url": f"{remote.url}/pending", "interval": 10, "timeout": 60,
              "responseFilter": {"status": [200], "body": {"state": ["done"]}}}

    early = await attempt(FETCH_POLL, params)
    late = await attempt(FETCH_POLL, params, started_at=NOW - 55_000)

    assert isinstance(early, Later) and early.at == NOW + 10_000
    assert isinstance(late, Settled) and late.error is not None
    assert late.error["name"] == "PollTimeout" and "60 s" in late.error["message"]


def test_retry_at_follows_v2s_formula() -> None:
    options = {"limit": 4, "factor": 2, "minTimeoutInMs": 100, "maxTimeoutInMs": 300,
               "randomize": False}

    assert [operations.retry_at(options, n, NOW) for n in range(4)] == [
        NOW + 100, NOW + 100, NOW + 200, None]
    assert operations.retry_at({**options, "limit": 9}, 5, NOW) == NOW + 300  # capped
    spread = operations.retry_at({"randomize": True}, 0, NOW)
    assert spread is not None and NOW + 1000 <= spread <= NOW + 2000
