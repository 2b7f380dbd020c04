"""Turning values into HTML: the Jinja environment (autoescaping everything it is given) and
the few helpers templates call — times, durations, and JSON as a foldable tree.

JSON is drawn here rather than in a template because it is recursive and must stay bounded: a
payload of a million keys draws its first ``NODES`` nodes (and a string its first
``TEXT_CHARS`` characters), then a "load all" link that loads the whole value in its place as
pretty-printed text (``whole_value``), so a huge event cannot freeze the page until asked to.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape

NODES = 400  # JSON nodes drawn before "show all"
TEXT_CHARS = 2000  # characters of one string drawn before it is cut
OPEN_DEPTH = 2  # containers deeper than this start folded


def environment() -> Environment:
    env = Environment(loader=PackageLoader("tidings.server.dashboard", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=when, ago_ms=duration, json_tree=json_tree, json_text=json_text,
                       whole_value=whole_value)
    return env


def when(ms: int | None) -> Markup:
    """A time as ``<time>`` in UTC to the millisecond (the page's script shows it local)."""
    if ms is None:
        return Markup("—")
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    iso = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    shown = moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"
    return Markup('<time datetime="{}">{}</time>').format(iso, shown)


def duration(ms: int | None) -> str:
    if ms is None:
        return "—"
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.2f} s"
    minutes, seconds = divmod(ms // 1000, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def json_text(value: Any) -> str:
    """Pretty JSON (two-space indent, keys in their order)."""
    return msgspec.json.format(msgspec.json.encode(value), indent=2).decode()


def json_tree(value: Any, full: str | None = None) -> Markup:
    """``value`` as nested ``<details>`` (folding needs no script), cut after ``NODES`` nodes
    or ``TEXT_CHARS`` characters of a string, with a "load all" link to ``full`` (a page part
    holding the whole value, loaded in place) when given."""
    budget = [NODES]
    cut = [False]
    out: list[str] = ['<div class="json">']
    _node(value, out, budget, 0, cut)
    if budget[0] <= 0 or cut[0]:
        what = f"after {NODES} values" if budget[0] <= 0 else "(long text)"
        link = (Markup(' <a class="load-all" href="{0}" hx-get="{0}" hx-target="closest .json" '
                       'hx-swap="outerHTML">load all</a>').format(full) if full else "")
        out.append(str(Markup('<p class="cut">… cut {}.{}</p>').format(what, link)))
    out.append("</div>")
    return Markup("".join(out))


def whole_value(value: Any) -> Markup:
    """All of ``value``, pretty-printed text (what "load all" puts in place of a cut tree)."""
    return Markup('<div class="json json-all"><pre>{}</pre></div>').format(json_text(value))


def _node(value: Any, out: list[str], budget: list[int], depth: int,
          cut: list[bool]) -> None:
    budget[0] -= 1
    if isinstance(value, dict):
        _container(value.items(), "{", "}", len(value), out, budget, depth, cut, keyed=True)
    elif isinstance(value, list):
        _container(enumerate(value), "[", "]", len(value), out, budget, depth, cut,
                   keyed=False)
    else:
        out.append(_scalar(value, cut))


def _container(items: Any, start: str, end: str, size: int, out: list[str], budget: list[int],
               depth: int, cut: list[bool], *, keyed: bool) -> None:
    if size == 0:
        out.append(f'<span class="j-p">{start}{end}</span>')
        return
    is_open = " open" if depth < OPEN_DEPTH else ""
    noun = "key" if keyed else "item"
    out.append(f'<details{is_open}><summary><span class="j-p">{start}</span>'
               f'<span class="j-n">{size} {noun}{"s" if size != 1 else ""}</span></summary><ul>')
    for key, item in items:
        if budget[0] <= 0:
            out.append('<li class="j-more">…</li>')
            break
        out.append("<li>")
        if keyed:
            out.append(str(Markup('<span class="j-k">{}</span>: ').format(_quoted(key, cut))))
        _node(item, out, budget, depth + 1, cut)
        out.append("</li>")
    out.append(f'</ul><span class="j-p">{end}</span></details>')


def _scalar(value: Any, cut: list[bool]) -> str:
    if value is None:
        return '<span class="j-null">null</span>'
    if isinstance(value, bool):
        return f'<span class="j-b">{"true" if value else "false"}</span>'
    if isinstance(value, int | float):
        return f'<span class="j-num">{escape(str(value))}</span>'
    return str(Markup('<span class="j-s">{}</span>').format(_quoted(str(value), cut)))


def _quoted(text: str, cut: list[bool]) -> str:
    shown = msgspec.json.encode(text[:TEXT_CHARS]).decode()
    if len(text) > TEXT_CHARS:
        shown += f" … ({len(text):,} characters)"
        cut[0] = True
    return shown
