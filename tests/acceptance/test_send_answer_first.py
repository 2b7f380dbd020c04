"""Scenario: the answer to a send leaves before the first call of any run it starts.

An SDK's client learns of its send from the Event API's answer (inngest-py's middleware calls
``after_send_events`` then), and a function served by the same process may be called for the
run that send started. The Event API writes its answer before the run's first call is made:
new runs are handed to the executor in the same step of the event loop that answers, and the
call starts in a later one. So by the time the app reads the call, the answer is already in the
sender's socket. What the sender's process does with the two afterwards (which thread reads
first) is its own affair.

The app is the official ``inngest`` SDK under uvicorn in this process, so its function can see,
as it is called, whether the sender's socket holds the answer (without reading it).
"""

from __future__ import annotations

import select
import socket
import threading
import warnings
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import fastapi
import inngest
import pytest
import uvicorn

from tests.acceptance.sdk_apps import Api, wait_for
from tests.conftest import LiveServer, free_port, start_server, stop_server

EVENTS = 20


class Sender:
    """Sends events over one raw keep-alive connection and leaves each answer unread until
    asked, so the app can see whether it has come."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)

    def send(self, name: str, index: int) -> None:
        body = f'{{"name": "{name}", "data": {{"index": {index}}}}}'.encode()
        self.sock.sendall(b"POST /e/dev HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                          b"content-type: application/json\r\n"
                          + f"content-length: {len(body)}\r\n\r\n".encode() + body)

    def answered(self) -> bool:
        """Whether an answer waits in the socket, without taking it out or waiting (a socket
        with a timeout would wait that long in ``recv`` for one to come)."""
        readable, _, _ = select.select([self.sock], [], [], 0)
        return bool(readable)

    def read_answer(self) -> bytes:
        """One whole answer (its headers and its ``content-length`` bytes of body)."""
        data = b""
        while b"\r\n\r\n" not in data:
            data += self.sock.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(body) < length:
            body += self.sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 200"), data
        return body

    def close(self) -> None:
        self.sock.close()


class App:
    """An inngest-py app whose function notes, on its first call for each event, whether the
    sender already had its answer."""

    def __init__(self, server_url: str) -> None:
        with warnings.catch_warnings():
            # The SDK's models use pydantic's class-based config, which pydantic 2 deprecates.
            warnings.simplefilter("ignore", DeprecationWarning)
            import inngest.fast_api
        self.sender: Sender | None = None
        self.seen: dict[int, bool] = {}
        client = inngest.Inngest(app_id="answer-first", is_production=False,
                                 api_base_url=server_url, event_api_base_url=server_url)

        @client.create_function(fn_id="note", retries=0,
                                trigger=inngest.TriggerEvent(event="answer-first/sent"))
        async def note(ctx: inngest.Context) -> None:
            assert self.sender is not None
            index = ctx.event.data["index"]
            assert isinstance(index, int)
            self.seen.setdefault(index, self.sender.answered())

        app = fastapi.FastAPI()
        inngest.fast_api.serve(app, client, [note])
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api/inngest"
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                     log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        wait_for(lambda: self._server.started or None, timeout=30, what="the app to listen")

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[LiveServer, App]]:
    port = free_port()
    app = App(f"http://127.0.0.1:{port}")
    try:
        server = start_server(tmp_path, "--db", str(tmp_path / "dev.db"), "-u", app.url,
                              "--no-discovery", port=port)
    except BaseException:
        app.close()
        raise
    try:
        yield server, app
    finally:
        stop_server(server)
        app.close()


def test_the_answer_to_a_send_is_in_the_senders_socket_before_its_run_is_called(
        stack: tuple[LiveServer, App]) -> None:
    server, app = stack
    api = Api(server.url)
    wait_for(lambda: api.synced(app.url), timeout=30, what="the app to sync")
    sender = app.sender = Sender(server.port)
    try:
        for index in range(EVENTS):
            sender.send("answer-first/sent", index)
            # The run's first call looks into the socket; the answer is read only afterwards,
            # so it cannot be missing there for having been read already.
            wait_for(partial(app.seen.get, index), timeout=30,
                     what=f"the run of event {index} to be called")
            assert b'"ids"' in sender.read_answer()
    finally:
        sender.close()
    assert app.seen == dict.fromkeys(range(EVENTS), True)
