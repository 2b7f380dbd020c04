"""``step.ai.infer``: the inference request an SDK describes in an ``AIGateway`` op, made by
Tidings as Inngest's executor makes it, its answer recorded as the step's output.

The op's ``opts`` hold ``url``, ``format``, ``auth_key``, ``headers`` and ``body``. The request
is a ``POST`` of ``body`` as JSON to ``url`` with ``Content-Type: application/json``, the key
where its format expects it (``anthropic``: ``X-Api-Key``; ``gemini``: a ``key`` query
parameter; ``bedrock``: ``Authorization`` as given; any other: ``Authorization: Bearer``), then
the op's own headers, every name written as Go writes it (``X-My-Header``). A 2xx answer's
JSON is the step's output (``{"data": answer}``); any other answer, or none, is an
``AIGatewayError`` attempt of the step, retried as a failed step is. An op that cannot be sent
(no http(s) URL, headers that are not text) fails the step for good.

The request goes out through the HTTP driver's client (``http_client``), the same path as calls
of apps, so whatever guards that path guards this one. The key and the headers are the user's
secrets: they are sent and forgotten — never logged, never stored, never part of an error,
which names the URL without its query (a Gemini URL carries the key there).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec

from tidings.calls.error_records import ErrorJSON
from tidings.engine.http_client import AppCaller, CallFailed

ERROR_NAME = "AIGatewayError"
MAX_ERROR_BODY = 64 * 1024  # of a failed answer, kept in the step's error


class BadInference(ValueError):
    """The op describes a request that cannot be sent."""


@dataclass(frozen=True, slots=True)
class Inference:
    """A request to make: where, with what headers (secrets among them) and body."""

    url: str
    headers: dict[str, str]
    body: bytes

    @property
    def where(self) -> str:
        """The URL without its query or credentials: what errors and logs may name."""
        parts = urlsplit(self.url)
        return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))

    def __repr__(self) -> str:
        return f"Inference(url={self.where!r})"  # never the key or the headers


@dataclass(frozen=True, slots=True)
class Answer:
    """What the request came to: the step's output, or the error of this attempt."""

    output: bytes | None = None  # {"data": answer}
    error: ErrorJSON | None = None


def inference_of(opts: Any) -> Inference:
    """The request an ``AIGateway`` op's ``opts`` describe; ``BadInference`` says why not."""
    if not isinstance(opts, Mapping):
        raise BadInference("the op has no opts")
    url = opts.get("url")
    if not isinstance(url, str) or not url:
        raise BadInference("the op names no URL")
    try:
        parts = urlsplit(url)
        _ = parts.port  # reading it checks it
    except ValueError as exc:
        raise BadInference(f"the URL is not valid: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadInference(f"the URL is not an http(s) URL ({parts.scheme or 'no'} scheme)")
    if any(c in url for c in " \r\n\t\x00"):
        raise BadInference("the URL holds whitespace or control characters")
    key = opts.get("auth_key") or ""
    extra = opts.get("headers") or {}
    if not isinstance(key, str):
        raise BadInference("auth_key is not text")
    if not isinstance(extra, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in extra.items()):
        raise BadInference("headers is not an object of text values")
    if any(c in k + v for k, v in extra.items() for c in "\r\n\x00") or any(
            c in key for c in "\r\n\x00"):
        raise BadInference("a header holds a line break")
    headers = {"Content-Type": "application/json"}
    style = opts.get("format")
    if style == "gemini":
        query = [*parse_qsl(parts.query, keep_blank_values=True), ("key", key)]
        url = urlunsplit(parts._replace(query=urlencode(query)))
    elif style == "bedrock":
        headers["Authorization"] = key
    elif style == "anthropic":
        headers["X-Api-Key"] = key
    else:
        headers["Authorization"] = f"Bearer {key}"
    for name, value in extra.items():
        canonical = _canonical(name)
        headers[canonical] = (f"{headers[canonical]}, {value}" if canonical in headers
                              else value)
    return Inference(url, headers, msgspec.json.encode(opts.get("body")))


def _canonical(name: str) -> str:
    """A header name as Go writes it (``x-api-key`` → ``X-Api-Key``): providers see the names
    Inngest's requests carry."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


async def infer(http: AppCaller, request: Inference) -> Answer:
    """Make the request; a 2xx JSON answer is the output, anything else this attempt's error."""
    try:
        reply = await http.post(request.url, request.body, request.headers)
    except CallFailed as exc:
        # The client's message may name the whole URL: name it without its query instead.
        reason = str(exc).replace(request.url, request.where)
        return Answer(error=_error(f"cannot reach {request.where}: {reason}", None))
    if not 200 <= reply.status <= 299:
        return Answer(error=_error(f"unsuccessful status code: {reply.status}", reply.body))
    try:
        answer = msgspec.json.decode(reply.body)
    except msgspec.DecodeError:
        return Answer(error=_error("the answer is not JSON", reply.body))
    return Answer(output=msgspec.json.encode({"data": answer}))


def _error(reason: str, body: bytes | None) -> ErrorJSON:
    """Inngest's error for a failed inference: the provider's answer as ``data`` (and
    ``stack``, where Inngest puts it too)."""
    text = (body or b"").decode(errors="replace")[:MAX_ERROR_BODY]
    try:
        data: Any = msgspec.json.decode(text) if text else {"error": "Error making AI request"}
    except msgspec.DecodeError:
        data = text
    return {"name": ERROR_NAME, "message": f"Error making AI request: {reason}",
            "data": data, "stack": text or None}
