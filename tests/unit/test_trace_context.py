"""An event's creation context as it is stored: 25 bytes on SQLite, a W3C ``traceparent`` on
PostgreSQL and in rows stored before; either reads back as the same ids."""

from __future__ import annotations

import pytest

from tidings.observe.trace_context import PACKED_SIZE, packed, parse, w3c

TRACE = 0x0AF7651916CD43DD8448EB211C80319C
SPAN = 0xB7AD6B7169203331
TRACEPARENT = f"00-{TRACE:032x}-{SPAN:016x}-01"


@pytest.mark.parametrize("sampled", [True, False])
def test_a_packed_context_reads_back_as_its_ids_and_as_their_traceparent(sampled: bool) -> None:
    context = packed(TRACE, SPAN, sampled)
    assert len(context) == PACKED_SIZE
    assert parse(context) == (TRACE, SPAN, sampled)
    text = w3c(context)
    assert text == f"00-{TRACE:032x}-{SPAN:016x}-{'01' if sampled else '00'}"
    assert parse(text) == (TRACE, SPAN, sampled)


def test_the_largest_ids_fit() -> None:
    trace, span = (1 << 128) - 1, (1 << 64) - 1
    assert parse(packed(trace, span, True)) == (trace, span, True)
    assert parse(packed(1, 1, False)) == (1, 1, False)


def test_text_is_read_as_a_traceparent_and_given_back_as_it_is() -> None:
    assert parse(TRACEPARENT) == (TRACE, SPAN, True)
    assert parse(f" {TRACEPARENT} ") == (TRACE, SPAN, True)
    assert w3c(TRACEPARENT) == TRACEPARENT
    assert w3c(None) is None


@pytest.mark.parametrize("bad", [
    None, "", b"", b"\x01" * (PACKED_SIZE - 1), b"\x01" * (PACKED_SIZE + 1),
    packed(0, SPAN, True), packed(TRACE, 0, True),
    "00-" + "0" * 32 + f"-{SPAN:016x}-01", f"00-{TRACE:032x}-" + "0" * 16 + "-01",
    f"ff-{TRACE:032x}-{SPAN:016x}-01", f"00-{TRACE:031x}-{SPAN:016x}-01",
    f"00-{TRACE:032x}-{SPAN:016x}", "00-" + "g" * 32 + f"-{SPAN:016x}-01", "not a context",
])
def test_a_bad_context_reads_as_none(bad: str | bytes | None) -> None:
    assert parse(bad) is None
