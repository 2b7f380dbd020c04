"""An event's creation context (W3C Trace Context) as Tidings keeps it.

With tracing on, each stored event keeps the context of the PRODUCER span that stored it, and
its runs' spans link to it (``observe/tracing.py``). SQLite keeps it as 25 bytes (``packed``:
the trace id's 16, the span id's 8 and the flags' 1), less than half the 55 characters of a
``traceparent``, and made without formatting hex on the event loop. PostgreSQL, whose column is
text, keeps the ``traceparent`` itself (``w3c``). ``parse`` reads either, as well as the
``traceparent`` text that rows stored before the bytes, and senders, give.
"""

from __future__ import annotations

PACKED_SIZE = 25
_LOW_64 = (1 << 64) - 1


def packed(trace_id: int, span_id: int, sampled: bool) -> bytes:
    """The context of a span with these ids, in ``PACKED_SIZE`` bytes."""
    return (trace_id << 72 | span_id << 8 | sampled).to_bytes(PACKED_SIZE)


def parse(value: str | bytes | None) -> tuple[int, int, bool] | None:
    """``(trace_id, span_id, sampled)`` of a context ``packed`` or of a W3C ``traceparent``;
    None when absent or bad."""
    if not value:
        return None
    if isinstance(value, bytes):
        if len(value) != PACKED_SIZE:
            return None
        both = int.from_bytes(value)
        trace_id, span_id = both >> 72, both >> 8 & _LOW_64
        return (trace_id, span_id, bool(value[24] & 1)) if trace_id and span_id else None
    parts = value.strip().split("-")
    if (len(parts) < 4 or len(parts[0]) != 2 or len(parts[1]) != 32 or len(parts[2]) != 16
            or len(parts[3]) < 2 or parts[0].lower() == "ff"):
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3][:2], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, bool(flags & 1)


def w3c(value: str | bytes | None) -> str | None:
    """A context as a W3C ``traceparent`` (text is given back as it is)."""
    if not isinstance(value, bytes):
        return value
    return f"00-{value[:16].hex()}-{value[16:24].hex()}-{value[24:].hex()}"
