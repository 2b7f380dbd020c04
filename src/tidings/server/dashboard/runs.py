"""The runs pages: the list (filters, counts per status, live, bulk cancel and replay with a
preview) and one run (its timeline, live while it is active; cancel, rerun).

Reads and actions go through what the runs API uses: ``run_query`` (the parameters of
``GET /v1/runs``), ``admin.list_runs`` and ``RunLevers`` (detail, cancel, rerun, count,
replay, cancel_many), so the dashboard refuses what the API refuses, with its words.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace
from functools import partial
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from tidings.errors import RequestRejected
from tidings.functions import registration
from tidings.ids import floor_id, now_ms
from tidings.runs import admin
from tidings.runs.admin import REPLAYABLE, TIMES, RunPage, RunQuery
from tidings.runs.model import STATUSES, TERMINAL
from tidings.server.dashboard.events import field_errors
from tidings.server.dashboard.live import Last, sse
from tidings.server.dashboard.pages import Pages, Viewer
from tidings.server.dashboard.render import whole_value
from tidings.server.dashboard.timeline import timeline
from tidings.server.requests import parse_time
from tidings.server.run_levers import OPEN, RunDetail
from tidings.server.runs_api import RUN_FILTERS, run_query

FILTERS = RUN_FILTERS
# The newest runs the counts per status are taken over: as many as a page of a status, app,
# event or started/ended filter looks at (admin.SCAN), so the counts describe what it looked at.
# 10,000 cost a function's page 10,000 scattered row reads (its runs are one in ten of the
# table's at 1,000,000): the page's p95 was over 50 ms on both databases.
COUNT_WINDOW = 2_000
COUNTS_EVERY = 5  # reads between two recounts of the statuses when the first page is still
COUNTS_GAP = 2.0  # seconds between two recounts, at least
TICK = 1.0  # seconds between two redraws of an active run's timeline
_MISSING = object()


class RunPages:
    def __init__(self, pages: Pages) -> None:
        self.pages = pages
        self.core = pages.core
        self.levers = pages.levers

    def routes(self) -> list[Route]:
        return [
            Route("/runs", self.list_page, methods=["GET"]),
            Route("/live/runs", self.live_list, methods=["GET"]),
            Route("/runs/bulk", self.bulk, methods=["POST"]),
            Route("/live/runs/{run_id}", self.live_run, methods=["GET"]),
            Route("/runs/{run_id}/cancel", self.cancel, methods=["POST"]),
            Route("/runs/{run_id}/rerun", self.rerun, methods=["POST"]),
            Route("/runs/{run_id}/value", self.value, methods=["GET"]),
            Route("/runs/{run_id:path}", self.detail, methods=["GET"]),
        ]

    # -- the list ------------------------------------------------------------------------------

    async def _page(self, query: RunQuery) -> RunPage:
        return await self.core.storage.read(partial(admin.find_runs, query=query))

    async def _counts(self, query: RunQuery) -> dict[str, int]:
        """Runs by status among the newest ``_window(query)`` the filters look at (index ranges,
        whatever the table holds)."""
        return await self.core.storage.read(partial(admin.count_statuses, query=query,
                                                    window=_window(query)))

    def _form(self, params: QueryParams) -> dict[str, Any]:
        form: dict[str, Any] = {name: params.get(name, "") for name in FILTERS
                                if name != "status"}
        form["time"] = form["time"] or "queued"
        form["status"] = [part.strip().lower() for value in params.getlist("status")
                          for part in value.split(",") if part.strip()]
        return form

    async def list_page(self, request: Request, message: str | None = None,
                        failed: bool = False) -> Response:
        viewer = await self.pages.viewer(request)
        form = self._form(request.query_params)
        context: dict[str, Any] = {"form": form, "errors": {}, "runs": [], "counts": {},
                                   "statuses": STATUSES, "window": COUNT_WINDOW, "message": message,
                                   "failed": failed, "functions": await self._slugs(viewer),
                                   "times": TIMES, "filtered": _filtered(
                                       _kept(request.query_params))}
        context["app_of"] = await self._apps(viewer)
        context["apps"] = sorted(set(context["app_of"].values()))
        try:
            query = await run_query(self.levers, viewer.env, request)
            context["window"] = _window(query)
        except RequestRejected as exc:
            named = (*FILTERS, "cursor", "limit")
            context["errors"] = (field_errors(exc, named) if exc.status != 404 else
                                 {"app" if exc.message.startswith("app ") else "function":
                                  exc.message})
            return self.pages.html(request, "runs.html", exc.status, **context)
        found, counts = await self.core.storage.read(partial(
            admin.find_runs_counted, query=query, window=_window(query)))
        kept = _kept(request.query_params)
        live = None
        if query.before_id is None and (query.max_id is None
                                        or query.max_id > floor_id(now_ms())):
            # The first page of a range that is still open: runs started from now on and
            # runs that move on show up live (a range that ended cannot change its members).
            live = "/live/runs?" + urlencode(kept, doseq=True)
        context.update(
            counts=counts, live=live, now=now_ms(), query_string=urlencode(kept, doseq=True),
            kept_but_status=_kept(request.query_params, but="status"),
            cursor_first=("/runs?" + urlencode(kept, doseq=True)) if query.before_id else None,
            **_pager(kept, found, query))
        return self.pages.html(request, "runs.html", 400 if failed else 200, **context)

    async def live_list(self, request: Request) -> Response:
        """The list's first page again whenever it changed, and the counts now and then."""
        viewer = await self.pages.viewer(request)
        query = replace(await run_query(self.levers, viewer.env, request), before_id=None)
        templates = self.pages.templates
        app_of = await self._apps(viewer)
        sent: list[tuple[str, str, int | None]] = []
        kept = _kept(request.query_params)
        # What the page drew: its note and pager follow from the number of rows and the cursor.
        pager_sent: tuple[int, str | None] = (-1, None)
        ticks = 0
        counts_sent: dict[str, int] = {}
        counted, moved = -COUNTS_GAP, True
        # Open copies share reads and the rows by their query, the pager and counts (which
        # carry the page's links) by their query and links.
        feed, key, drawn = self.pages.feed, repr(query), repr((query, kept))

        # The messages, not only the HTML, are made once for the open copies of the page.
        async def render(rows: list[Any]) -> str:
            return sse("rows", templates.get_template("_run_rows.html").render(
                runs=rows, now=now_ms(), app_of=app_of))

        async def render_pager(found: RunPage) -> str:
            return sse("pager", templates.get_template("_run_pager.html").render(
                cursor_first=None, **_pager(kept, found, query)))

        async def render_counts(counts: dict[str, int]) -> str:
            return sse("counts", templates.get_template("_run_counts.html").render(
                counts=counts, window=_window(query), statuses=STATUSES,
                kept=_kept(request.query_params, but="status")))

        async def fresh() -> list[str]:
            nonlocal sent, ticks, counts_sent, counted, moved, pager_sent
            messages = []
            found = await feed.shared(("runs", key), lambda: self._page(query))
            rows = found.runs
            state = [(run.id, run.status, run.ended_at) for run, _ in rows]
            if state != sent:
                messages.append(await feed.shared(("run rows", key, repr(state)),
                                                  lambda: render(rows)))
                sent, moved = state, True
            if (len(rows), found.cursor) != pager_sent:
                # A short page's note and its "Older" cursor move with the rows it holds.
                pager_sent = (len(rows), found.cursor)
                messages.append(await feed.shared(("run pager", drawn, pager_sent),
                                                  lambda: render_pager(found)))
            ticks += 1
            if (moved or ticks % COUNTS_EVERY == 0) and time.monotonic() - counted >= COUNTS_GAP:
                counted, moved = time.monotonic(), False
                counts = await feed.shared(("run counts", key), lambda: self._counts(query))
                if counts != counts_sent:
                    messages.append(await feed.shared(("run counts html", drawn, repr(counts)),
                                                      lambda: render_counts(counts)))
                    counts_sent = counts
            return messages

        return _stream(self.pages, fresh)

    async def _slugs(self, viewer: Viewer) -> list[str]:
        functions = await self.core.storage.read(registration.live_functions)
        return sorted(fn.slug for fn in functions if fn.env_id == viewer.env.id)

    async def _apps(self, viewer: Viewer) -> dict[str, str]:
        """The app of each function of the viewer's environment, by function id."""
        functions = await self.core.storage.read(registration.live_functions)
        return {fn.id: fn.app_id for fn in functions if fn.env_id == viewer.env.id}

    # -- bulk ----------------------------------------------------------------------------------

    async def bulk(self, request: Request) -> Response:
        """Bulk cancel or replay of the filtered runs: first a preview (how many it touches,
        as the API's ``dry_run`` counts them), then, confirmed, the action itself."""
        viewer = await self.pages.viewer(request)
        form = await self.pages.form(request)
        action = form.get("action", "")
        back = "/runs?" + form.get("back", "")
        errors: dict[str, str] = {}
        if action not in ("cancel", "replay"):
            errors["action"] = "action: cancel or replay"
        slug = form.get("function", "")
        if not slug:
            errors["function"] = ("function: a bulk action is for the runs of one function: "
                                  "filter by function first")
        since = until = 0
        for name in ("since", "until"):
            try:
                value = parse_time(name, form.get(name, ""))
            except RequestRejected as exc:
                errors[name] = exc.message
                continue
            if name == "since":
                since = value
            else:
                until = value
        if not errors and until <= since:
            errors["until"] = "until: must be after since"
        statuses = [s for s in STATUSES if s.lower() in form.get("statuses", "").split(",")]
        if action == "replay":
            statuses = [s for s in statuses if s in REPLAYABLE] or list(REPLAYABLE)
        if errors:
            return self.pages.html(request, "bulk.html", 400, errors=errors, form=form,
                                   back=back, matched=None)
        fn = await self.levers.function(viewer.env, slug)
        if form.get("confirmed") != "yes":
            matched = await self.levers.count(fn, since, until,
                                              OPEN if action == "cancel" else statuses)
            return self.pages.html(request, "bulk.html", errors={}, form=form, back=back,
                                   matched=matched, action=action, statuses=statuses)
        if action == "cancel":
            done = await self.levers.cancel_many(fn, since, until)
            note = f"cancelled {done} run{'s' if done != 1 else ''} of {slug}"
        else:
            replay, more = await self.levers.replay(fn, since, until, statuses)
            note = (f"replaying {replay.total} run{'s' if replay.total != 1 else ''} of {slug}"
                    + (" (going on in the background)" if more else ""))
        separator = "&" if "?" in back and not back.endswith("?") else ""
        self.pages.feed.poke()  # open pages show it now
        return RedirectResponse(back + separator + urlencode({"done": note}), status_code=303)

    # -- one run -------------------------------------------------------------------------------

    async def detail(self, request: Request, message: str | None = None,
                     failed: bool = False) -> Response:
        viewer = await self.pages.viewer(request)
        detail = await self.levers.detail(viewer.env, request.path_params["run_id"])
        now = now_ms()
        return self.pages.html(
            request, "run.html", 409 if failed else 200, d=detail, run=detail.run,
            line=timeline(detail, now), now=now, message=message, failed=failed,
            active=detail.run.status not in TERMINAL, seen=_version(detail))

    async def live_run(self, request: Request) -> Response:
        """The run's page body again whenever the run moved on (its status, steps, attempts or
        pauses changed), else its timeline, whose open bars grow; once it ended, its last body
        and ``ended``, and the stream closes (the page closes its end on ``ended``): an ended
        run changes no more, so nothing reads for its page again. A rerun is a new run, which
        the rerun button lands on and the runs list shows live.

        The page says which version of the run it shows (``seen``): a run that moved on between
        the page's render and the stream's start is sent at once, not taken as already shown."""
        viewer = await self.pages.viewer(request)
        run_id = request.path_params["run_id"]
        last = request.query_params.get("seen", "")
        templates = self.pages.templates

        async def fresh() -> list[str] | Last:
            nonlocal last
            detail = await self.levers.detail(viewer.env, run_id)
            moves, now = _version(detail), now_ms()
            run = detail.run
            ended = run.status in TERMINAL
            if moves == last and not ended:
                html = templates.get_template("_timeline.html").render(
                    line=timeline(detail, now), run=run)
                return [sse("timeline", html)]
            messages = []
            if moves != last:
                last = moves
                html = templates.get_template("_run_body.html").render(
                    d=detail, run=run, line=timeline(detail, now), now=now, viewer=viewer,
                    active=not ended, message=None, failed=False)
                messages.append(sse("run", html))
            return Last([*messages, sse("ended", "")]) if ended else messages

        # Its open bars grow with time alone: redrawn every second, poked or not.
        return _stream(self.pages, fresh, period=TICK)

    async def value(self, request: Request) -> Response:
        """One whole value of the run (``of``: ``output``, ``error``, a ``step``'s output or a
        failed ``attempt``'s error), in place of its cut tree ("load all"); the same value
        ``GET /v1/runs/{id}`` holds."""
        viewer = await self.pages.viewer(request)
        detail = await self.levers.detail(viewer.env, request.path_params["run_id"])
        params = request.query_params
        of, step = params.get("of", ""), params.get("step", "")
        found: Any = _MISSING
        if of == "output":
            found = detail.run.output
        elif of == "error":
            found = detail.run.error
        elif of == "step":
            found = next((s.output for s in detail.steps if s.step == step), _MISSING)
        elif of == "attempt":
            found = next((a.error for a in detail.failed.get(step, [])
                          if str(a.attempt) == params.get("attempt")), _MISSING)
        else:
            raise RequestRejected("of: expected output, error, step or attempt")
        if found is _MISSING:
            raise RequestRejected(f"{of} {step or ''!r} not found in run {detail.run.id}"
                                  .replace(" ''", ""), status=404)
        return self.pages.part(whole_value(found))

    async def cancel(self, request: Request) -> Response:
        return await self._act(request, self.levers.cancel)

    async def rerun(self, request: Request) -> Response:
        """Rerun the run, whole or from a step (the form's ``from_step``)."""
        return await self._act(request, self.levers.rerun)

    async def _act(self, request: Request, lever: Any) -> Response:
        form = await self.pages.form(request)
        viewer = await self.pages.viewer(request)
        run_id = request.path_params["run_id"]
        step = form.get("from_step") or None
        try:
            run, _ = await (lever(viewer.env, run_id) if step is None else
                            lever(viewer.env, run_id, step))
        except RequestRejected as exc:
            if exc.status != 409:
                raise
            return await self.detail(request, exc.message, True)
        self.pages.feed.poke()  # open pages show it now
        return RedirectResponse(f"/runs/{run.id}", status_code=303)


def _window(query: RunQuery) -> int:
    """How many runs the counts per status look at: the newest ``COUNT_WINDOW`` of one index
    range, or, where the filters read rows one by one (app, event, started or ended time), as
    many as a page looks at."""
    return COUNT_WINDOW if query.by_id_alone else admin.SCAN


def _pager(kept: list[tuple[str, str]], found: RunPage, query: RunQuery) -> dict[str, Any]:
    """What ``_run_pager.html`` draws under a page of runs: its note when the page is short or
    empty (how many runs it looked at), and the link to older runs."""
    return {"runs": found.runs, "limit": query.limit, "scan": admin.SCAN,
            "filtered": _filtered(kept),
            "next_page": ("/runs?" + urlencode([*kept, ("cursor", found.cursor)], doseq=True))
            if found.cursor else None}


def _filtered(kept: list[tuple[str, str]]) -> bool:
    return any(key not in ("limit", "time") for key, _ in kept)


def _moves(detail: RunDetail) -> tuple[Any, ...]:
    """What changes when a run moves on (a redraw of its page is due)."""
    run = detail.run
    return (run.status, run.attempt, run.ended_at, run.due_at, run.progress_at,
            tuple((s.step, s.status, s.attempts, s.ended_at) for s in detail.steps),
            tuple((p.step, p.until) for p in detail.pauses),
            sum(len(attempts) for attempts in detail.failed.values()))


def _version(detail: RunDetail) -> str:
    """A short name for what ``_moves`` holds, carried from the page to its stream."""
    return hashlib.blake2b(repr(_moves(detail)).encode(), digest_size=8).hexdigest()


def _kept(params: QueryParams, but: str = "") -> list[tuple[str, str]]:
    """The filters (and the page size) a link to another page of the list keeps."""
    return [(key, value) for key, value in params.multi_items()
            if key in (*FILTERS, "limit") and key != but and value]


def _stream(pages: Pages, fresh: Any, period: float | None = None) -> Response:
    return StreamingResponse(pages.feed.stream(fresh, period=period),
                             media_type="text/event-stream",
                             headers={"cache-control": "no-store", "x-accel-buffering": "no"})

