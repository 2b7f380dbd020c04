"""Spans made and exported by a process of their own: the server's span thread
(``span_sink.Batches``) sends each batch of records down a pipe (``SpanProcess``), and the helper
process (``main``, ``python -m tidings.observe.span_export``) makes them ``ReadableSpan``s and
hands them to the exporter the ``OTEL_*`` variables name.

Why a process: making a span and encoding it for OTLP are Python code, and Python code in any
thread of the server holds the interpreter lock the event loop needs. A P3 run's two spans cost
the server's span thread about 6 µs of that lock with an exporter that drops them, and OTLP's
protobuf encoding 30 to 40 µs a span more (``bench/README.md``); sending a record down the
pipe costs the server a fraction of a microsecond (``marshal``, then a write that lets go of
the lock).

The pipe carries frames: a little-endian 32-bit length, then ``marshal.dumps`` of a list of
records (names, ids, numbers, tuples and dicts of them only: ``span_sink.Record``). The helper
ignores SIGINT and SIGTERM (a Ctrl-C, or a supervisor stopping the whole group, would cut its
last export) and stops at the end of its input, having exported what it read: when the server
closes the pipe after its last batch (``Batches.shutdown``, at exit), or ends (the spans still
waiting are handed over as a server stops: ``tracing.flush``). A helper that exits is logged
with its exit code and started again, at once if it had run a minute, else after a wait that
doubles from a second up to a minute (``RESTART_S``); the spans handed over meanwhile are
dropped and counted in the log. One that could not make its exporter (``CONFIG_ERROR``) is
not started again: the server says once that its spans are dropped from then on.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import marshal
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any

from tidings.observe import logs, tracing
from tidings.observe.span_sink import Batches, Exporting, Record, export_batch_size

log = logging.getLogger("tidings.tracing")
FRAME = struct.Struct("<I")
CONFIG_ERROR = 78  # EX_CONFIG: the helper could not make its exporter
RESTART_S = (1.0, 60.0)  # the wait before starting a helper again: doubling from the first
# for one that keeps exiting, up to the second; none for one that ran as long as that
DROPS_LOGGED_EVERY_S = 60.0
PIPE_BYTES = 1 << 20  # Linux's limit for a process without privileges


def configure(environ: Mapping[str, str] = os.environ) -> bool:
    """Turn tracing on when the environment asks for it (once per process, at start), its
    spans made and exported by a process of their own; True when on. Without the ``otel``
    extra installed, or with an exporter that cannot be found, it says so and stays off."""
    if not tracing.wanted(environ):
        return False
    try:
        import opentelemetry.sdk.trace  # noqa: F401  (what the server needs of it)
    except ImportError:
        log.warning("OTEL_* variables ask for traces, but OpenTelemetry is not installed: "
                    "pip install 'tidings[otel]'; tracing stays off")
        return False
    if environ.get("TIDINGS_SPAN_EXPORTER", "").strip():
        try:  # found here, so that a wrong name is said at start; made by the helper
            tracing.exporter_class(environ)
        except ValueError as exc:
            log.error("%s; tracing stays off", exc)
            return False
    start(environ)
    log.info("tracing on: spans go to %s", tracing.exporter_named(environ))
    return True


def start(environ: Mapping[str, str] = os.environ) -> None:
    """Send spans, sampled as ``environ`` says, in batches to a process of their own that
    makes them and hands them to the exporter ``environ`` names."""
    sink = tracing.sink_from(environ)
    form, level = logs.configured
    helper = SpanProcess({**environ, "TIDINGS_LOG_FORMAT": form, "TIDINGS_LOG_LEVEL": level})
    tracing.send_to(sink, Batches(environ, helper.send, helper.close, "the span process"))


class SpanProcess:
    """The server's end of the pipe: ``send`` writes a batch of records to the helper
    process, started here with ``environ`` (the server's, with its log settings)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = dict(environ)
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.restart_at = 0.0  # when a helper may be started again
        self.wait = 0.0  # the last wait before a restart
        self.given_up = False
        self.dropped = 0  # spans dropped and not logged yet
        self.reported = -DROPS_LOGGED_EVERY_S
        self._start()

    def _start(self) -> subprocess.Popen[bytes] | None:
        self.started_at = time.monotonic()
        try:
            # Its own session: a Ctrl-C meant for the server is not its.
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tidings.observe.span_export"], stdin=subprocess.PIPE,
                env=self.environ, start_new_session=True)
        except OSError as exc:
            log.error("the span process could not be started (%s): spans are dropped", exc)
            self.process = None
            return None
        if self.process.stdin is not None:
            # A batch's frame (512 records, some 75 KB) in one write, without waiting for the
            # helper to read the first 64 KB (Linux's default); where allowed.
            with contextlib.suppress(OSError, AttributeError):
                fcntl.fcntl(self.process.stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        log.info("spans are made and exported by process %d", self.process.pid,
                 extra={"span_process": self.process.pid})
        return self.process

    def _running(self) -> subprocess.Popen[bytes] | None:
        """The helper; started again if it exited (said once, with its code), at once if it
        had run for ``RESTART_S[1]``, else after a wait that doubles each time."""
        process, now = self.process, time.monotonic()
        if process is not None:
            if process.poll() is None:
                return process
            self.process = None
            if process.returncode == CONFIG_ERROR:
                self.given_up = True
                log.error("the span process could not make its exporter (its log says why): "
                          "spans are dropped from now on")
                return None
            first, longest = RESTART_S
            self.wait = (0.0 if now - self.started_at >= longest
                         else min(longest, max(first, 2 * self.wait)))
            self.restart_at = now + self.wait
            log.warning("the span process (pid %d) exited with code %s; another is started "
                        "in %.0f s", process.pid, process.returncode, self.wait,
                        extra={"span_process": process.pid})
        if self.given_up or now < self.restart_at:
            return None
        return self._start()

    def send(self, records: list[Record]) -> None:
        """Write ``records`` to the helper (blocking while its pipe is full: the queue in
        front of it keeps taking spans meanwhile, and drops its oldest when full)."""
        process = self._running()
        if process is None or process.stdin is None:
            self._dropped(len(records))
            return
        body = marshal.dumps(records)
        frame = memoryview(FRAME.pack(len(body)) + body)
        fd = process.stdin.fileno()
        try:
            while frame:
                frame = frame[os.write(fd, frame):]
        except OSError as exc:
            log.warning("the span process (pid %d) stopped taking spans (%s)", process.pid,
                        exc, extra={"span_process": process.pid})
            self._dropped(len(records))

    def _dropped(self, count: int) -> None:
        self.dropped += count
        now = time.monotonic()
        if now - self.reported >= DROPS_LOGGED_EVERY_S:
            log.warning("%d spans were dropped: no span process took them", self.dropped)
            self.dropped, self.reported = 0, now

    def close(self, timeout: float) -> None:
        """Close the pipe and wait for the helper to export what it has and exit."""
        process = self.process
        if process is not None and process.stdin is not None:
            process.stdin.close()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("the span process (pid %d) did not finish its export in %.0f s: "
                            "stopped", process.pid, timeout)
                process.kill()
                process.wait()
        if self.dropped:
            log.warning("%d spans were dropped: no span process took them", self.dropped)


def main() -> int:
    """The helper: frames from stdin, made spans, exported; 0 at the end of its input."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    environ = os.environ
    logs.configure(format="json" if environ.get("TIDINGS_LOG_FORMAT") == "json" else "text",
                   level=environ.get("TIDINGS_LOG_LEVEL", "info"))
    try:
        exporter = tracing.exporter_class(environ)()
    except Exception as exc:
        log.error("the span exporter could not be made: %s", exc)
        return CONFIG_ERROR
    made = Exporting(exporter, tracing.sink_from(environ).spans, export_batch_size(environ))
    read = sys.stdin.buffer.read
    while len(head := read(FRAME.size)) == FRAME.size:
        size = FRAME.unpack(head)[0]
        body = read(size)
        if len(body) < size:  # the server stopped halfway through a frame
            break
        records: Any = marshal.loads(body)
        made(records)
    exporter.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
