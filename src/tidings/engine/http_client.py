"""How the HTTP driver reaches SDK apps: ``POST`` a call, read the whole answer, over HTTP/1.1
connections kept alive per origin and parsed with httptools (uvicorn's parser).

The driver makes two or more calls per run, a hundred runs at a time, so the cost of a call is
most of what the server spends on a run of an SDK function. httpx (with httpcore, h11 and
anyio) spends about seven times the CPU of this client on a call, and httpcore 1.0's pool
re-examines every connection it holds on each request and response (bench P7). The driver
needs little: one method, bodies in memory, answers sized by ``Content-Length`` or chunked,
TLS, a timeout. Answers are read as Go's client (Inngest's) reads them: an ``HTTP/1.0`` answer's
``Transfer-Encoding`` is ignored, so its body runs to ``Content-Length`` or the end of the
connection (``_http10``; a proxy built on Python's ``http.server`` answers so). Where more is
needed — a proxy from the environment, or a transport given for tests — ``HttpxClient`` makes
the same calls through httpx.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol, cast
from urllib.parse import urlsplit

import httptools
import httpx

from tidings.netguard import Policy
from tidings.netguard import proxied as proxied  # the driver picks its client by it
from tidings.netguard import transport as guarded_transport

# SDK servers commonly close connections idle for 5 s (uvicorn, Node's http): stop reusing
# them before that.
KEEPALIVE_SECONDS = 4.0
MAX_IDLE_PER_ORIGIN = 256
CONNECT_TIMEOUT = 10.0
MAX_HEAD_BYTES = 64 * 1024  # an answer's status line and headers, looked at before parsing


class CallFailed(Exception):
    """The app could not be reached, or it broke the connection before answering in full."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes
    # Came over a channel the app authenticated itself on (a Connect worker's socket): believed
    # without a signature, as Inngest believes it.
    authenticated: bool = False


class AppCaller(Protocol):
    """What the HTTP driver calls apps with."""

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Target:
    origin: tuple[str, str, int]  # scheme, host, port
    host_header: str
    path: str

    @property
    def tls(self) -> bool:
        return self.origin[0] == "https"


@lru_cache(maxsize=1024)
def _target(url: str) -> _Target:
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise CallFailed(f"cannot call {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CallFailed(f"cannot call {url}: not an http(s) URL")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.netloc.rpartition("@")[2]
    if any(c in path + host for c in " \r\n"):
        raise CallFailed(f"cannot call {url!r}: not a valid URL")
    return _Target((parts.scheme, parts.hostname, port), host, path)


def _http10(head: bytes) -> bytes:
    """The head of an answer as Go reads it: on ``HTTP/1.0``, without ``Transfer-Encoding``."""
    if not head.startswith(b"HTTP/1.0"):
        return head
    end = head.find(b"\r\n\r\n")
    lines = head[:end].split(b"\r\n")
    kept = [line for line in lines
            if line.split(b":", 1)[0].strip().lower() != b"transfer-encoding"]
    return b"\r\n".join(kept) + head[end:]


def _head(target: _Target, headers: Mapping[str, str], length: int) -> bytes:
    lines = [f"POST {target.path} HTTP/1.1", f"host: {target.host_header}",
             f"content-length: {length}"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise CallFailed(f"header {name!r} has a line break")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: one call at a time."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._answer: asyncio.Future[Answer] | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        # The start of the current answer, kept until its head is whole when it may be HTTP/1.0.
        self._start: bytearray | None = None
        self.received = False  # some of the current answer has arrived
        self._headers_done = False
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0

    # -- asyncio -------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport instances, but they are transports.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received = True
        if self._start is not None:
            if not self._start and data.startswith(b"HTTP/1.1"):
                self._start = None  # the usual answer: straight to the parser
            else:
                self._start += data
                if (b"\r\n\r\n" not in self._start and len(self._start) < MAX_HEAD_BYTES
                        and b"HTTP/1.0".startswith(bytes(self._start[:8]))):
                    return  # the head is not whole yet
                data, self._start = _http10(bytes(self._start)), None
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(CallFailed(f"the answer is not HTTP/1.1: {exc or type(exc).__name__}"))
            self.close()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        if (exc is None and self._headers_done and "content-length" not in self._headers
                and "transfer-encoding" not in self._headers):
            self._complete()  # an answer whose end is the end of the connection
        self._fail(CallFailed("the app closed the connection before answering"
                              + (f": {exc}" if exc else "")))

    # -- httptools -----------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._headers = {}
        self._body = []
        self._headers_done = False

    def on_headers_complete(self) -> None:
        self._headers_done = self._parser.get_status_code() >= 200

    def on_header(self, name: bytes, value: bytes) -> None:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._parser.get_status_code() < 200:
            return  # informational: the answer follows
        self.reusable = bool(self._parser.should_keep_alive())
        self._complete()

    def _complete(self) -> None:
        answer = Answer(self._parser.get_status_code(), self._headers, b"".join(self._body))
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(answer)

    # -- calls ---------------------------------------------------------------------------------

    def _fail(self, exc: CallFailed) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(exc)

    async def call(self, head: bytes, body: bytes) -> Answer:
        assert self._transport is not None
        if self.closed:
            raise CallFailed("the connection is closed")
        self._answer = asyncio.get_running_loop().create_future()
        self.received = self.reusable = False
        self._start = bytearray()
        self._transport.write(head + body)
        try:
            return await self._answer
        finally:
            self._answer = None

    def close(self) -> None:
        self.reusable = False
        if self._transport is not None and not self.closed:
            self._transport.close()


class AppClient:
    """Calls SDK apps over kept-alive HTTP/1.1 connections (a stack of idle ones per origin:
    the most recently used is taken first)."""

    def __init__(self, *, timeout: float, connect_timeout: float = CONNECT_TIMEOUT,
                 keepalive: float = KEEPALIVE_SECONDS, max_idle: int = MAX_IDLE_PER_ORIGIN,
                 ssl_context: ssl.SSLContext | None = None, guard: Policy | None = None) -> None:
        self._guard = guard or Policy.open()
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._keepalive = keepalive
        self._max_idle = max_idle
        self._ssl_context = ssl_context
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._busy: set[_Connection] = set()
        self._closed = False

    def idle(self) -> int:
        """Connections waiting for a call."""
        return sum(len(stack) for stack in self._idle.values())

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        if self._closed:
            raise CallFailed("the HTTP driver is closed")
        target = _target(url)
        head = _head(target, headers, len(body))
        while True:
            connection, reused = await self._take(target)
            self._busy.add(connection)
            try:
                async with asyncio.timeout(self._timeout):
                    answer = await connection.call(head, body)
            except CallFailed:
                connection.close()
                if reused and not connection.received:
                    # The app closed an idle connection as the call went out: the call never
                    # reached it, so it goes once more, on a new connection.
                    continue
                raise
            except TimeoutError:
                connection.close()
                raise CallFailed(f"no answer within {self._timeout:g} s") from None
            except BaseException:
                connection.close()
                raise
            finally:
                self._busy.discard(connection)
            self._release(target, connection)
            return answer

    async def _take(self, target: _Target) -> tuple[_Connection, bool]:
        stack = self._idle.get(target.origin)
        now = time.monotonic()
        while stack:
            connection = stack.pop()
            if connection.reusable and now - connection.idle_since < self._keepalive:
                return connection, True
            connection.close()
        return await self._connect(target), False

    async def _connect(self, target: _Target) -> _Connection:
        scheme, host, port = target.origin
        context = None
        if target.tls:
            context = self._ssl_context = self._ssl_context or httpx.create_ssl_context()
        try:
            async with asyncio.timeout(self._connect_timeout):
                # Through the guard: only to addresses it allows, checked as connected.
                _, connection = await self._guard.connect(_Connection, host, port, ssl=context)
        except TimeoutError:
            raise CallFailed(f"cannot connect to {scheme}://{host}:{port}: timed out "
                             f"after {self._connect_timeout:g} s") from None
        except OSError as exc:
            raise CallFailed(f"cannot connect to {scheme}://{host}:{port}: "
                             f"{exc.strerror or exc}") from None
        return connection

    def _release(self, target: _Target, connection: _Connection) -> None:
        stack = self._idle.setdefault(target.origin, [])
        if self._closed or not connection.reusable or len(stack) >= self._max_idle:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        stack.append(connection)

    async def aclose(self) -> None:
        self._closed = True
        for connection in [c for stack in self._idle.values() for c in stack] + [*self._busy]:
            connection.close()
        self._idle.clear()
        self._busy.clear()


class HttpxClient:
    """The same calls through httpx: honours proxies from the environment, and takes a
    transport (``httpx.ASGITransport`` in tests)."""

    def __init__(self, *, timeout: float, transport: httpx.AsyncBaseTransport | None = None,
                 guard: Policy | None = None) -> None:
        if transport is None and guard is not None:
            transport = guarded_transport(guard)
        self._http = httpx.AsyncClient(transport=transport,
                                       timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT))

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        try:
            response = await self._http.post(url, content=body, headers=dict(headers))
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise CallFailed(str(exc) or type(exc).__name__) from None
        found = {k.lower(): v for k, v in response.headers.items()}
        return Answer(response.status_code, found, response.content)

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self._http.aclose()
