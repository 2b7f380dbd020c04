"""``step.ai.infer``'s request, as Inngest's executor builds it from the op, and what its answer
comes to: the key where each format wants it, an op that cannot be sent refused with the reason,
a provider's failure kept as the attempt's error — and the key in none of the errors."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tidings.engine.ai_infer import BadInference, Inference, infer, inference_of
from tidings.engine.http_client import AppClient
from tidings.netguard import Policy

KEY = "sk-secret-0123"


def opts(**extra: Any) -> dict[str, Any]:
    return {"type": "step.ai.infer", "url": "https://api.example.com/v1/chat",
            "auth_key": KEY, "format": "openai-chat", "headers": {},
            "body": {"messages": [{"role": "user", "content": "hi"}]}, **extra}


def test_the_key_goes_where_the_format_puts_it_and_the_ops_headers_follow() -> None:
    default = inference_of(opts(headers={"x-trace": "t1", "authorization": "extra"}))
    assert default.url == "https://api.example.com/v1/chat"
    assert default.headers == {"Content-Type": "application/json",
                               "Authorization": f"Bearer {KEY}, extra", "X-Trace": "t1"}
    assert json.loads(default.body) == {"messages": [{"role": "user", "content": "hi"}]}
    assert inference_of(opts(format="anthropic")).headers["X-Api-Key"] == KEY
    assert inference_of(opts(format="bedrock")).headers["Authorization"] == KEY
    gemini = inference_of(opts(format="gemini", url="https://g.example/m:gen?alt=sse"))
    assert gemini.url == f"https://g.example/m:gen?alt=sse&key={KEY}"
    assert "Authorization" not in gemini.headers
    assert gemini.where == "https://g.example/m:gen"
    assert KEY not in repr(gemini)


@pytest.mark.parametrize(("bad", "reason"), [
    (None, "the op has no opts"),
    (opts(url=None), "names no URL"),
    (opts(url=42), "names no URL"),
    (opts(url="file:///etc/passwd"), "not an http(s) URL (file scheme)"),
    (opts(url="ftp://example.com/x"), "not an http(s) URL (ftp scheme)"),
    (opts(url="//example.com/x"), "not an http(s) URL (no scheme)"),
    (opts(url="http:///nohost"), "not an http(s) URL"),
    (opts(url="http://[::1/x"), "not valid"),
    (opts(url="http://example.com:99999/"), "not valid"),
    (opts(url="http://example.com/a b"), "whitespace or control"),
    (opts(headers=["x"]), "headers is not an object of text values"),
    (opts(headers={"x": 1}), "headers is not an object of text values"),
    (opts(headers={"x": "a\r\nInjected: 1"}), "line break"),
    (opts(auth_key=["k"]), "auth_key is not text"),
    (opts(auth_key="k\nx"), "line break"),
])
def test_an_op_that_cannot_be_sent_is_refused_with_the_reason(bad: Any, reason: str) -> None:
    with pytest.raises(BadInference, match=reason.replace("(", r"\(").replace(")", r"\)")):
        inference_of(bad)


async def _provider(answer: bytes) -> tuple[asyncio.Server, str]:
    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(reply, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1?key={KEY}"


async def test_a_json_answer_is_the_output_and_anything_else_the_attempts_error() -> None:
    client = AppClient(timeout=5)
    cases = [
        (b"HTTP/1.0 200 OK\r\n\r\n{\"text\": \"hi\"}", {"data": {"text": "hi"}}, None),
        (b"HTTP/1.1 503 Unavailable\r\ncontent-length: 21\r\n\r\n{\"error\": \"overload\"}",
         None, ("Error making AI request: unsuccessful status code: 503",
                {"error": "overload"})),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nhi!", None,
         ("Error making AI request: the answer is not JSON", "hi!")),
        (b"HTTP/1.1 500 Oops\r\ncontent-length: 0\r\n\r\n", None,
         ("Error making AI request: unsuccessful status code: 500",
          {"error": "Error making AI request"})),
    ]
    try:
        for raw, output, error in cases:
            server, url = await _provider(raw)
            try:
                answer = await infer(client, Inference(url, {}, b"{}"))
            finally:
                server.close()
            if output is not None:
                assert answer.error is None
                assert answer.output is not None and json.loads(answer.output) == output
            else:
                assert answer.output is None and answer.error is not None
                assert answer.error["name"] == "AIGatewayError"
                assert (answer.error["message"], answer.error["data"]) == error
                assert KEY not in json.dumps(answer.error)
    finally:
        await client.aclose()


async def test_an_unreachable_provider_is_the_attempts_error_without_the_key() -> None:
    client = AppClient(timeout=5)
    try:
        answer = await infer(client, Inference(f"http://127.0.0.1:1/v1?key={KEY}", {}, b"{}"))
    finally:
        await client.aclose()
    assert answer.error is not None
    assert answer.error["message"].startswith(
        "Error making AI request: cannot reach http://127.0.0.1:1/v1: ")
    assert KEY not in json.dumps(answer.error)


async def test_under_serve_an_inference_to_a_private_address_is_refused_before_connecting(
) -> None:
    """The same guard as calls of apps (``netguard``): a provider URL on loopback is refused
    under ``serve``, with nothing sent there, and the step's error says why."""
    reached: list[bytes] = []
    server, url = await _provider(b"HTTP/1.0 200 OK\r\n\r\n{}")
    server.close()  # reopened below on the same port, to see whether anything connects

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reached.append(await reader.read(100))
        writer.close()

    port = int(url.split(":")[2].split("/")[0])
    listener = await asyncio.start_server(record, "127.0.0.1", port)
    client = AppClient(timeout=5, guard=Policy.build())
    try:
        answer = await infer(client, Inference(url, {}, b"{}"))
    finally:
        await client.aclose()
        listener.close()
    assert answer.output is None and answer.error is not None
    assert answer.error["name"] == "AIGatewayError"
    assert "loopback" in answer.error["message"]
    assert "--allow-app-host" in answer.error["message"]
    assert KEY not in json.dumps(answer.error)
    assert reached == []
