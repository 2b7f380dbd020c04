"""The events pages: the live list (the home page), one event, and the send form.

They read and act through what the JSON API uses: ``event_search`` (the parameters of
``GET /v1/events``), ``EventLog``, ``parse_events`` and ``Ingest.append`` (as ``POST
/v1/events``), ``admin.cancel_delivery`` (as ``POST /v1/events/{id}/cancel``).
"""

from __future__ import annotations

import shlex
from dataclasses import replace
from functools import partial
from typing import Any
from urllib.parse import urlencode

import msgspec
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from tidings.errors import EventsInvalid, RequestRejected
from tidings.events.model import StoredEvent, iso
from tidings.flow import status as flow_status
from tidings.ids import floor_id, now_ms
from tidings.json_input import decode_json
from tidings.privacy.erase import EVENTS_MODES, erase
from tidings.runs.local import ALL
from tidings.runs.model import Run
from tidings.server.accept import store_events
from tidings.server.dashboard.live import sse
from tidings.server.dashboard.pages import NotFoundPage, Pages
from tidings.server.dashboard.render import whole_value
from tidings.server.event_search import run_counts, search
from tidings.server.http import TICKET
from tidings.server.log_api import event_search
from tidings.server.requests import ULID_RE

FILTERS = ("name", "if", "since", "until")
EVENT_RUNS = 100  # runs an event page lists (the newest)
LIVE_ROWS = 50  # rows one wake-up of the stream sends at most
RECENT = 20  # rows whose run counts the stream keeps up to date
RECENT_MS = 10 * 60_000
SEND_FIELDS = (
    ("name", "Name", "text", "required, e.g. app/user.created"),
    ("data", "Data", "json", "a JSON object"),
    ("user", "User", "json", "a JSON object, encrypted at rest (optional)"),
    ("id", "Id", "text", "idempotency key (optional)"),
    ("ts", "Timestamp (ts)", "text", "ms since the epoch (optional)"),
    ("deliver_at", "Deliver at", "text", "ISO-8601 or ms: delay delivery (optional)"),
)


def field_errors(exc: RequestRejected, fields: tuple[str, ...]) -> dict[str, str]:
    """The API's message, placed next to the field it names (``name: …``, ``if: …``)."""
    for name in fields:
        if exc.message.startswith(f"{name}:"):
            return {name: exc.message}
    return {"other": exc.message}


class EventPages:
    def __init__(self, pages: Pages) -> None:
        self.pages = pages
        self.core = pages.core

    def routes(self) -> list[Route]:
        return [
            Route("/", self.list_page, methods=["GET"]),
            Route("/live/events", self.live, methods=["GET"]),
            Route("/events/{event_id}/cancel", self.cancel, methods=["POST"]),
            Route("/events/{event_id}/value", self.value, methods=["GET"]),
            Route("/events/{event_id}/erase", self.erase_person, methods=["GET", "POST"]),
            # ``:path``: whatever follows /events/ is an id, found or not (a 404 page).
            Route("/events/{event_id:path}", self.detail, methods=["GET"]),
            Route("/send", self.send, methods=["GET", "POST"]),
        ]

    # -- the list ------------------------------------------------------------------------------

    async def list_page(self, request: Request) -> Response:
        viewer = await self.pages.viewer(request)
        form = {key: request.query_params.get(key, "") for key in FILTERS}
        context: dict[str, Any] = {"form": form, "errors": {}, "events": [], "counts": {},
                                   "filtered": any(form.values()), "condition": form["if"]}
        try:
            query = event_search(self.core, viewer.env, request)
        except RequestRejected as exc:
            context["errors"] = field_errors(exc, (*FILTERS, "cursor", "limit"))
            return self.pages.html(request, "events.html", 400, **context)
        page = await search(self.core.storage, self.core.events, query)
        ids = [event.id for event in page.events]
        counts = await self.core.storage.read(partial(run_counts, event_ids=ids))
        kept = {key: value for key, value in form.items() if value}
        live = None
        if query.before_id is None and (query.max_id is None
                                        or query.max_id > floor_id(now_ms())):
            after = ids[0] if ids else floor_id(now_ms())
            live = "/live/events?" + urlencode({**kept, "after": after})
        context.update(
            events=page.events, counts=counts, scanned=page.scanned, live=live,
            next_page=("/?" + urlencode({**kept, "cursor": page.cursor})) if page.cursor
            else None,
            cursor_first=("/?" + urlencode(kept)) if query.before_id else None)
        return self.pages.html(request, "events.html", **context)

    async def live(self, request: Request) -> Response:
        """The stream of the list's first page: rows newer than ``after`` as they arrive, and
        the run counts of the newest rows as their runs start and end."""
        viewer = await self.pages.viewer(request)
        query = event_search(self.core, viewer.env, request)
        after = max(request.query_params.get("after", ""),
                    request.headers.get("last-event-id", ""))
        if after and not ULID_RE.fullmatch(after):
            raise RequestRejected(f"after: not an event id: {after[:100]!r}")
        newest = replace(query, min_id=max(after, query.min_id or ""), before_id=None,
                         limit=LIVE_ROWS)
        recent: dict[str, tuple[int, dict[str, int]]] = {}  # id -> (received, counts sent)
        templates = self.pages.templates
        feed = self.pages.feed  # open copies of this page share their reads and renders

        # The messages, not only the HTML, are made once for the open copies of the page.
        async def rows(new: list[Any], counts: dict[str, dict[str, int]]) -> str:
            html = templates.get_template("_event_rows.html").render(events=new, counts=counts)
            return sse("rows", html, new[0].id)

        async def pills(changed: list[tuple[str, dict[str, int]]]) -> str:
            macro = templates.get_template("_runs_pills.html").module.pills  # type: ignore[attr-defined]
            return sse("counts", "".join(str(macro(event_id, now, oob=True))
                                         for event_id, now in changed))

        async def fresh() -> list[str]:
            nonlocal newest
            messages = []
            page = await feed.shared(("events", repr(newest)), lambda: search(
                self.core.storage, self.core.events, newest))
            new = [event for event in page.events if event.id > (newest.min_id or "")]
            horizon = now_ms() - RECENT_MS
            for event_id, (received, _) in list(recent.items()):
                if received < horizon:
                    del recent[event_id]
            ids = [event.id for event in new] + list(recent)
            counts = await feed.shared(("event runs", tuple(ids)), lambda: self.core.storage.read(
                partial(run_counts, event_ids=ids)))
            if new:
                messages.append(await feed.shared(
                    ("event rows", tuple(event.id for event in new), repr(counts)),
                    lambda: rows(new, counts)))
                newest = replace(newest, min_id=new[0].id)
            changed = [(event_id, counts.get(event_id, {})) for event_id in recent
                       if counts.get(event_id, {}) != recent[event_id][1]]
            if changed:
                messages.append(await feed.shared(("event pills", repr(changed)),
                                                  lambda: pills(changed)))
            for event_id, now in changed:
                recent[event_id] = (recent[event_id][0], now)
            for event in new[:RECENT]:
                recent[event.id] = (event.received_at, counts.get(event.id, {}))
            while len(recent) > RECENT:
                del recent[min(recent)]
            return messages

        return StreamingResponse(self.pages.feed.stream(fresh), media_type="text/event-stream",
                                 headers={"cache-control": "no-store",
                                          "x-accel-buffering": "no"})

    # -- one event -----------------------------------------------------------------------------

    async def _event(self, request: Request) -> tuple[Any, StoredEvent]:
        viewer = await self.pages.viewer(request)
        event_id = request.path_params["event_id"]
        event = (await self.core.events.get(viewer.env.id, event_id)
                 if ULID_RE.fullmatch(event_id) else None)
        if event is None:
            raise NotFoundPage("event", event_id)
        return viewer, event

    async def detail(self, request: Request, message: str | None = None,
                     failed: bool = False) -> Response:
        viewer, event = await self._event(request)

        def read(tx: Any) -> tuple[list[dict[str, Any]], list[tuple[Run, str]]]:
            rows = tx.all("newest_runs_of_event", (viewer.env.id, event.id, EVENT_RUNS + 1))
            return (flow_status.skips(tx, event.id),
                    [(Run.from_row(r), str(r[22])) for r in rows])

        skipped, runs = await self.core.storage.read(read)
        # ``user`` only for a viewer who may read it (session.py); the copies leave it out too.
        masked = None if viewer.session.reads_user or not event.user else len(event.user)
        shown = event if masked is None else replace(event, user={})
        return self.pages.html(
            request, "event.html", 409 if failed else 200, event=shown, skipped=skipped,
            runs=runs[:EVENT_RUNS], more_runs=len(runs) > EVENT_RUNS,
            delivery=delivery(event), message=message, failed=failed, masked=masked,
            erasable=person_of(event) is not None and viewer.session.reads_user,
            curl=as_curl(shown, str(request.base_url)), python=as_python(shown))

    async def value(self, request: Request) -> Response:
        """The event's whole ``data`` or ``context`` (``of``), in place of its cut tree
        ("load all"); the same value ``GET /v1/events/{id}`` holds."""
        _, event = await self._event(request)
        of = request.query_params.get("of", "")
        if of not in ("data", "context"):
            raise RequestRejected("of: expected data or context")
        return self.pages.part(whole_value(event.data if of == "data" else event.context))

    async def cancel(self, request: Request) -> Response:
        await self.pages.form(request)
        viewer, event = await self._event(request)
        try:
            await self.pages.levers.cancel_delivery(viewer.env, event.id)
        except RequestRejected as exc:
            if exc.status != 409:
                raise
            return await self.detail(request, exc.message, True)
        self.pages.feed.poke()  # open pages show it now
        return RedirectResponse(f"/events/{event.id}", status_code=303)

    async def erase_person(self, request: Request) -> Response:
        """Erase the person of the event (``user.external_id``), as ``DELETE
        /v1/users/{external_id}`` does: a GET asks to confirm (and whether to delete their
        events too), the confirmed POST erases and shows the counts. Only for a viewer who may
        read ``user`` (everyone in dev)."""
        viewer, event = await self._event(request)
        external_id = person_of(event)
        if not viewer.session.reads_user:
            raise RequestRejected("erasing a person needs a sign-in that may read people's "
                                  "data (tidings keys create-dashboard --reads-user)",
                                  status=403)
        if external_id is None:
            raise RequestRejected("this event has no user.external_id: there is no person "
                                  "to erase", status=409)
        if request.method == "GET":
            return self.pages.html(request, "erase.html", event=event,
                                   external_id=external_id, done=None)
        form = await self.pages.form(request)
        mode = next((m for m in EVENTS_MODES if m == form.get("events", "keep")), None)
        if mode is None:
            raise RequestRejected(f"events: expected keep or delete, got "
                                  f"{form.get('events', '')[:100]!r}")
        if form.get("confirm") != "erase":
            raise RequestRejected("confirm: erasing a person is confirmed on its own page "
                                  f"(/events/{event.id}/erase)")
        who = "dashboard:" + viewer.session.token.partition(".")[0][:16]
        done = await erase(self.core.storage, self.core.vault, viewer.env.id, external_id,
                           events=mode, actor=who)
        if done.runs_cancelled:
            self.core.wakers.wake(ALL)  # cancelled runs may have freed slots or parents
        self.pages.feed.poke()
        return self.pages.html(request, "erase.html", event=event, external_id=external_id,
                               done=done.to_json())

    # -- sending -------------------------------------------------------------------------------

    async def send(self, request: Request) -> Response:
        viewer = await self.pages.viewer(request)
        keys = [key for key, *_ in SEND_FIELDS]
        if request.method == "GET":
            form = dict.fromkeys(keys, "") | {"data": "{}"}
            return self.pages.html(request, "send.html", form=form, errors={},
                                   fields=SEND_FIELDS)
        posted = await self.pages.form(request)
        form = {key: posted.get(key, "") for key in keys}
        try:
            ids = await store_events(self.core, viewer.env, event_body(form),
                                     ticket=request.scope.get(TICKET))
        except EventsInvalid as exc:
            errors = {e.field or "other": f"events[0].{e.field}: {e.message}" if e.field
                      else f"events[0]: {e.message}" for e in exc.errors}
            return self.pages.html(request, "send.html", 400, form=form, errors=errors,
                                   fields=SEND_FIELDS)
        except RequestRejected as exc:
            field = next((key for key in keys if exc.message.startswith(f"events[0].{key}")),
                         "other")
            return self.pages.html(request, "send.html", exc.status, form=form,
                                   errors={field: exc.message}, fields=SEND_FIELDS)
        self.pages.feed.poke()  # open pages show it now
        return RedirectResponse(f"/events/{ids[0]}", status_code=303)


def event_body(form: dict[str, str]) -> bytes:
    """The body ``POST /v1/events`` would get for the form: JSON fields decoded by the API's
    decoder (its message names the field), the rest as typed."""
    event: dict[str, Any] = {"name": form["name"]}
    for key in ("data", "user"):
        text = form[key].strip()
        if text:
            event[key] = decode_json(text.encode(), f"events[0].{key}")
    if form["id"].strip():
        event["id"] = form["id"].strip()
    for key in ("ts", "deliver_at"):
        text = form[key].strip()
        if text:
            event[key] = int(text) if text.isascii() and text.isdigit() else text
    return msgspec.json.encode(event)


def person_of(event: StoredEvent) -> str | None:
    """The ``external_id`` the vault keys the event's ``user`` on, if it has one."""
    external_id = event.user.get("external_id") if event.user else None
    return external_id if isinstance(external_id, str) and external_id else None


def delivery(event: StoredEvent) -> dict[str, str]:
    """Where the event is on its way to functions."""
    if event.cancelled_at is not None:
        return {"state": "cancelled", "detail": "its delivery was cancelled; no run started"}
    if event.delivered_at is not None:
        return {"state": "delivered", "detail": ""}
    if event.deliver_at is not None and event.deliver_at > now_ms():
        return {"state": "delayed", "detail": f"until {iso(event.deliver_at)}"}
    return {"state": "pending", "detail": "due, waiting for the router"}


def _sendable(event: StoredEvent) -> dict[str, Any]:
    out: dict[str, Any] = {"name": event.name, "data": event.data}
    if event.user:
        out["user"] = event.user
    if event.v:
        out["v"] = event.v
    return out


def as_curl(event: StoredEvent, base: str) -> str:
    body = msgspec.json.encode(_sendable(event)).decode()
    return (f"curl -X POST {base.rstrip('/')}/e/$TIDINGS_EVENT_KEY \\\n"
            f"  -H 'content-type: application/json' \\\n  -d {shlex.quote(body)}")


def as_python(event: StoredEvent) -> str:
    fields = _sendable(event)
    args = ", ".join(f"{key}={value!r}" for key, value in fields.items())
    return ("import tidings\n\nclient = tidings.Tidings(app_id=\"my-app\")\n"
            f"await client.send(tidings.Event({args}))")
