"""The HTTP driver's client against a loopback server whose answers each test scripts: calls
share kept-alive connections (over TLS too), answers come whole however they are framed, and
every way an app can fail to answer is a ``CallFailed`` — after one more try when a kept-alive
connection was closed under the call."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import ssl
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tidings.engine.http_client import AppClient, CallFailed, HttpxClient, proxied

Reply = Callable[[int, bytes], bytes | None]  # (request number, body) -> raw answer, None: hang up


class Cut(bytes):
    """An answer after which the app hangs up."""


def ok(body: bytes, *headers: bytes) -> bytes:
    extra = b"".join(h + b"\r\n" for h in headers)
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


class App:
    """A loopback HTTP/1.1 server: counts connections, keeps the requests it read."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.url = ""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                found = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
                body = await reader.readexactly(int(found[1]) if found else 0)
                self.requests.append((head, body))
                answer = self.reply(len(self.requests), body)
                if answer is None:
                    return
                writer.write(answer)
                await writer.drain()
                if isinstance(answer, Cut) or b"connection: close" in answer.lower():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Reply], asyncio.Future[App]]]:
    servers: list[asyncio.Server] = []

    async def start(reply: Reply) -> App:
        app = App(reply)
        server = await asyncio.start_server(app.serve, "127.0.0.1", 0)
        servers.append(server)
        app.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/api/inngest?fnId=f"
        return app

    yield start  # type: ignore[misc]
    for server in servers:
        server.close()


async def test_calls_share_one_kept_alive_connection(serve: Callable[..., App]) -> None:
    app = await serve(lambda n, body: ok(b'{"n":%d}' % n, b"X-Inngest-SDK: py:v0.5"))
    client = AppClient(timeout=5)
    answers = [await client.post(app.url, b'{"a":1}', {"x-run-id": "01RUN"}) for _ in range(5)]
    assert [a.body for a in answers] == [b'{"n":%d}' % n for n in range(1, 6)]
    assert answers[0].status == 200 and answers[0].headers["x-inngest-sdk"] == "py:v0.5"
    assert app.connections == 1 and client.idle() == 1
    head, body = app.requests[0]
    assert head.startswith(b"POST /api/inngest?fnId=f HTTP/1.1\r\n")
    assert b"\r\nhost: 127.0.0.1:" in head and b"\r\nx-run-id: 01RUN\r\n" in head
    assert body == b'{"a":1}'
    await client.aclose()
    assert client.idle() == 0
    with pytest.raises(CallFailed):
        await client.post(app.url, b"{}", {})


async def test_concurrent_calls_open_connections_as_needed_and_keep_them(
        serve: Callable[..., App]) -> None:
    app = await serve(lambda n, body: ok(body))
    client = AppClient(timeout=5)

    async def burst() -> list[bytes]:
        answers = await asyncio.gather(*(client.post(app.url, b"%d" % i, {})
                                         for i in range(20)))
        return [a.body for a in answers]

    assert await burst() == [b"%d" % i for i in range(20)]
    opened = app.connections
    assert opened <= 20 and client.idle() == opened
    assert await burst() == [b"%d" % i for i in range(20)]
    assert app.connections == opened
    await client.aclose()


async def test_chunked_and_close_delimited_answers_arrive_whole(
        serve: Callable[..., App]) -> None:
    chunked = b"HTTP/1.1 206 Partial Content\r\ntransfer-encoding: chunked\r\n\r\n" \
              b"5\r\n[{\"op\r\n4\r\n\":1}\r\n1\r\n]\r\n0\r\n\r\n"
    until_close = b"HTTP/1.1 500 Internal Server Error\r\nconnection: close\r\n\r\nboom"
    app = await serve(lambda n, body: chunked if n == 1 else until_close)
    client = AppClient(timeout=5)
    first = await client.post(app.url, b"{}", {})
    assert (first.status, first.body) == (206, b'[{"op":1}]')
    second = await client.post(app.url, b"{}", {})
    assert (second.status, second.body) == (500, b"boom")
    assert client.idle() == 0  # the app closed it
    await client.aclose()


async def test_an_http_1_0_answer_is_read_to_its_end_whatever_its_transfer_encoding_says(
        serve: Callable[..., App]) -> None:
    """As Go's client reads it (Inngest's): on HTTP/1.0 ``Transfer-Encoding`` is ignored, so
    an unchunked body that says ``chunked`` (what a proxy built on ``http.server`` passes on for
    a streamed answer) runs to ``Content-Length`` or to the end of the connection."""
    streamed = b'  {"status":200,"headers":{},"body":"\\"Hi\\""}'
    answers = [
        Cut(b"HTTP/1.0 201 Created\r\nServer: BaseHTTP/0.6\r\nTransfer-Encoding: chunked\r\n"
            b"x-inngest-sdk: inngest-py:v0.5\r\n\r\n" + streamed),
        b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 4\r\n\r\nfine",
        Cut(b"HTTP/1.0 200 OK\r\n\r\nto the end"),
    ]
    app = await serve(lambda n, body: answers[n - 1])
    client = AppClient(timeout=5)
    first = await client.post(app.url, b"{}", {})
    assert (first.status, first.body) == (201, streamed)
    assert first.headers["x-inngest-sdk"] == "inngest-py:v0.5"
    assert "transfer-encoding" not in first.headers
    assert (await client.post(app.url, b"{}", {})).body == b"fine"
    assert (await client.post(app.url, b"{}", {})).body == b"to the end"
    assert client.idle() == 0  # HTTP/1.0 without keep-alive: never reused
    await client.aclose()


async def test_an_answer_whose_head_arrives_in_pieces_is_read_whole(
        serve: Callable[..., App]) -> None:
    pieces = [b"HTT", b"P/1.", b"0 200 OK\r\nTransfer-Enc", b"oding: chunked\r\n\r",
              b"\nbody", b" and more"]

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.close()

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    client = AppClient(timeout=5)
    try:
        answer = await client.post(
            f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/", b"", {})
        assert (answer.status, answer.body) == (200, b"body and more")
    finally:
        server.close()
        await client.aclose()


async def test_a_kept_alive_connection_closed_under_a_call_is_replaced_once(
        serve: Callable[..., App]) -> None:
    # The second request arrives on a connection the app then drops without a word, as an app
    # closing an idle connection does when a call crosses its close.
    app = await serve(lambda n, body: None if n == 2 else ok(b"fine"))
    client = AppClient(timeout=5)
    await client.post(app.url, b"{}", {})
    answer = await client.post(app.url, b"{}", {})
    assert answer.body == b"fine"
    assert app.connections == 2 and len(app.requests) == 3
    await client.aclose()


async def test_an_answer_cut_short_on_a_new_connection_fails(serve: Callable[..., App]) -> None:
    app = await serve(lambda n, body: Cut(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"))
    client = AppClient(timeout=5)
    with pytest.raises(CallFailed, match="closed the connection"):
        await client.post(app.url, b"{}", {})
    assert app.connections == 1
    await client.aclose()


async def test_an_answer_that_is_not_http_fails(serve: Callable[..., App]) -> None:
    for garbage in (b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
                    b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\n"
                    b"upgrade: websocket\r\n\r\n"):
        app = await serve(lambda n, body, garbage=garbage: garbage)
        client = AppClient(timeout=5)
        with pytest.raises(CallFailed, match="not HTTP"):
            await client.post(app.url, b"{}", {})
        await client.aclose()


async def test_an_app_that_is_not_there_or_does_not_answer_fails(
        serve: Callable[..., App]) -> None:
    silent = await serve(lambda n, body: b"")  # reads the request, never answers
    client = AppClient(timeout=0.3)
    with pytest.raises(CallFailed, match=re.escape("no answer within 0.3 s")):
        await client.post(silent.url, b"{}", {})
    with pytest.raises(CallFailed, match=re.escape("cannot connect to http://127.0.0.1:1:")):
        await client.post("http://127.0.0.1:1/api/inngest", b"{}", {})
    with pytest.raises(CallFailed, match="not an http"):
        await client.post("ftp://127.0.0.1/x", b"{}", {})
    await client.aclose()


async def test_connections_idle_past_the_keepalive_are_not_reused(
        serve: Callable[..., App]) -> None:
    app = await serve(lambda n, body: ok(b"ok"))
    client = AppClient(timeout=5, keepalive=0.05)
    await client.post(app.url, b"{}", {})
    await asyncio.sleep(0.1)
    await client.post(app.url, b"{}", {})
    assert app.connections == 2
    await client.aclose()


async def test_a_header_with_a_line_break_is_not_sent(serve: Callable[..., App]) -> None:
    app = await serve(lambda n, body: ok(b"ok"))
    client = AppClient(timeout=5)
    with pytest.raises(CallFailed, match="line break"):
        await client.post(app.url, b"{}", {"x-inngest-step-id": "a\r\nx-evil: 1"})
    assert app.requests == []
    await client.aclose()


async def test_the_httpx_client_answers_alike() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers["x-run-id"] == "down":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(206, headers={"X-Inngest-SDK": "js:v4"}, content=request.content)

    client = HttpxClient(timeout=5, transport=httpx.MockTransport(handler))
    answer = await client.post("http://app/api/inngest", b"[1]", {"x-run-id": "01RUN"})
    assert (answer.status, answer.body, answer.headers["x-inngest-sdk"]) == (206, b"[1]", "js:v4")
    with pytest.raises(CallFailed, match="refused"):
        await client.post("http://app/api/inngest", b"[1]", {"x-run-id": "down"})
    await client.aclose()


def test_proxies_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                 "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert not proxied()
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert proxied()


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "app.pem", folder / "app.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


async def test_https_apps_are_called_over_tls_and_their_certificate_is_checked(
        tmp_path: Path) -> None:
    cert_file, key_file = _self_signed(tmp_path)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert_file, key_file)
    app = App(lambda n, body: ok(b"secure"))
    server = await asyncio.start_server(app.serve, "127.0.0.1", 0, ssl=served)
    url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/api/inngest"
    try:
        trusting = AppClient(timeout=5, ssl_context=ssl.create_default_context(
            cafile=str(cert_file)))
        assert (await trusting.post(url, b"{}", {})).body == b"secure"
        assert (await trusting.post(url, b"{}", {})).body == b"secure"
        assert app.connections == 1
        await trusting.aclose()
        default = AppClient(timeout=5)  # the usual CA bundle: this certificate is unknown
        with pytest.raises(CallFailed, match=re.escape("cannot connect to https://127.0.0.1:")):
            await default.post(url, b"{}", {})
        await default.aclose()
    finally:
        server.close()
