"""JSON that came from outside: the one decoder for every request body the server reads (and
for an app's answer to a sync), so that no body can fail in a way the caller is not told about.

msgspec refuses malformed JSON, invalid UTF-8 and lone surrogate escapes with a ``DecodeError``
but gives up on deep nesting with a ``RecursionError`` (near Python's recursion limit, about
1,000 levels), which nothing expects. ``decode_json`` turns both into ``RequestRejected``
naming what was read, and also refuses a value nested deeper than ``MAX_DEPTH`` (checked after
decoding, without recursion), so that a body the decoder survives cannot overflow whatever
walks it next (a filter check, a canonicalizer).

msgspec does not say *where* the bad text or the deep nesting is; ``blame`` finds it, so that
the caller reads ``functions[0].name: is not valid UTF-8`` rather than "malformed JSON". It reads
the document again without recursion (tokens found by one regular expression, a stack of the
containers it is in), so only refused requests pay for it.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from tidings.errors import RequestRejected
from tidings.settings import Limits

MAX_DEPTH = Limits().max_depth


def decode_json(raw: bytes, what: str = "the body", *, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value of ``raw``; ``RequestRejected`` (400) naming ``what`` when it is not
    JSON, not UTF-8, or nested more than ``max_depth`` levels deep."""
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        if "UTF-8" in str(exc):
            raise RequestRejected(f"{what}: {shown_path(blame(raw, max_depth))}is not valid "
                                  "UTF-8") from None
        raise RequestRejected(f"{what} is not JSON: {reason(exc)}") from None
    except RecursionError:
        value = _TOO_DEEP
    if value is _TOO_DEEP or not shallow_enough(value, max_depth):
        raise RequestRejected(f"{what}: {shown_path(blame(raw, max_depth))}is nested more "
                              f"than {max_depth} levels deep")
    return value


def reason(exc: BaseException) -> str:
    """Why msgspec refused a document, in words for the caller."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    text = str(exc).removeprefix("JSON is malformed: ")
    if text.startswith("Invalid UTF-8"):
        return "it is not valid UTF-8"
    return text


def shallow_enough(value: Any, limit: int) -> bool:
    """True when ``value`` nests at most ``limit`` containers deep (a level at a time, so no
    depth can overflow the stack)."""
    level = [value]
    for _ in range(limit):
        deeper: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                deeper.extend(v for v in item.values() if isinstance(v, dict | list))
            elif isinstance(item, list):
                deeper.extend(v for v in item if isinstance(v, dict | list))
        if not deeper:
            return True
        level = deeper
    return False


def blame(raw: bytes, max_depth: int) -> list[str | int] | None:
    """The path (keys and indexes) to the first text in ``raw`` that is not UTF-8, or to the
    first value nested more than ``max_depth`` containers deep; None when there is neither."""
    stack: list[list[Any]] = []  # per open container: "{" or "[", and its current key or index
    last = b""
    for match in _TOKENS.finditer(raw):
        token = match.group()
        if token in (b"{", b"["):
            if len(stack) >= max_depth:
                return _path(stack)
            stack.append(["{", None] if token == b"{" else ["[", 0])
        elif token in (b"}", b"]"):
            if stack:
                stack.pop()
        elif token == b",":
            if stack and stack[-1][0] == "[":
                stack[-1][1] += 1
        elif token == b":":
            if stack and stack[-1][0] == "{":
                stack[-1][1] = _text(last)
        elif not is_utf8(token):
            is_key = raw[match.end():match.end() + 64].lstrip()[:1] == b":"
            return _path(stack[:-1] if is_key and stack else stack) if is_key else _path(stack)
        last = token
    return None


def shown_path(path: list[str | int] | None) -> str:
    """``functions[0].name: `` for a path (what a message puts before its complaint)."""
    if not path:
        return ""
    text = ""
    for part in path[:8]:
        text += f"[{part}]" if isinstance(part, int) else ("." if text else "") + part
    return text + ("…" if len(path) > 8 else "") + ": "


def _path(stack: list[list[Any]]) -> list[str | int]:
    return [frame[1] for frame in stack if frame[1] is not None]


def is_utf8(raw: bytes) -> bool:
    """True when ``raw`` is UTF-8 (one ``isascii`` scan when it is ASCII, as it nearly always
    is)."""
    if raw.isascii():
        return True
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


def _text(quoted: bytes) -> str | None:
    try:
        value = msgspec.json.decode(quoted)
    except msgspec.DecodeError:
        return None
    return value if isinstance(value, str) else None


_TOO_DEEP = object()
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}:,]', re.S)
