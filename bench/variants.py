"""``tidings dev`` with one part of ingest taken out, to show where P1's time goes.

``python -m bench.variants VARIANT dev --host ... --port ... --db ...``

- ``nostore``: ``POST /e/{key}`` parses, validates and assigns ids as always, then answers
  without storing anything. The ceiling of any storage design on this server stack.
- ``nosync``: everything as in ``tidings dev`` except the ``fdatasync`` that makes each group
  commit durable before it is acknowledged (``_Syncer``). NOT durable; only for measuring.
- ``traced``: ``tidings dev`` with tracing on and every span handed to an exporter that drops
  it (``Drop``, in batches, as OTLP's would be; made and exported by the span process, as
  ``tidings.observe.span_export`` does for OTLP): what tracing costs, the network aside. On
  code from before the span process (``--base-src``), in the server's own export thread.

Benchmark-only: nothing here is reachable from ``tidings`` itself.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

VARIANTS = ("nostore", "nosync", "traced")


def _nostore() -> None:
    from tidings.ids import IdSeed, new_ids, now_ms
    from tidings.ingest import Ingest

    async def append(self: Ingest, env_id: str, events: Sequence[Any],
                     seed: IdSeed | None = None, *, received_at: int | None = None) -> list[str]:
        now = now_ms() if received_at is None else received_at
        if seed is not None:
            return [seed.id_at(index) for index in range(1, len(events) + 1)]
        return new_ids(len(events), now)

    Ingest.append = append  # type: ignore[method-assign]


def _nosync() -> None:
    from tidings.storage import sqlite as storage

    def skip(self: Any) -> None:
        return None

    storage._Syncer._sync = skip  # type: ignore[method-assign]


class Drop(SpanExporter):
    """A span exporter that drops what it is given (``TIDINGS_SPAN_EXPORTER``'s form:
    ``bench.variants:Drop``)."""

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _traced() -> None:
    if importlib.util.find_spec("tidings.observe.span_export") is not None:
        # the CLI turns tracing on from the variable, its spans made by the span process
        os.environ["TIDINGS_SPAN_EXPORTER"] = "bench.variants:Drop"
    else:  # code from before the span process: spans made in the server's thread
        from tidings.observe import tracing

        tracing.export_to(Drop())


def main() -> None:
    variant, *argv = sys.argv[1:]
    if variant not in VARIANTS:
        raise SystemExit(f"unknown variant {variant!r}: one of {', '.join(VARIANTS)}")
    {"nostore": _nostore, "nosync": _nosync, "traced": _traced}[variant]()
    from tidings.cli import main as tidings

    sys.argv = ["tidings", *argv]
    tidings()


if __name__ == "__main__":
    main()
