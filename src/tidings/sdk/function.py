"""Functions: a handler, the triggers that start it, and how it is retried.

``Tidings.function`` builds these; the engine runs them. A function's slug is
``<app_id>-<id>``, as Inngest composes ids, so native and SDK-served functions share one namespace.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tidings.errors import ConfigError
from tidings.events.parse import RESERVED_PREFIXES
from tidings.functions.cel_check import check_expression
from tidings.functions.filters import check_filter
from tidings.functions.flow_config import parse_flow

MAX_TRIGGERS = 10
MAX_RETRIES = 20
DEFAULT_RETRIES = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class TriggerEvent:
    """Start the function on events named ``event`` (``app/*`` and ``app/user.*`` wildcards).

    ``if_`` is a CEL condition over ``event``; ``source``, ``filter`` (over the payload) and
    ``context_filter`` follow Trigger.dev's event filters.
    """

    event: str
    if_: str | None = None
    source: str | None = None
    filter: Mapping[str, Any] | None = None
    context_filter: Mapping[str, Any] | None = None

    def check(self) -> None:
        name = self.event
        if not name or len(name) > 255:
            raise ConfigError("a trigger's event name is 1 to 255 characters")
        star = name.find("*")
        if star != -1 and (star != len(name) - 1 or star == 0 or name[star - 1] not in "/."):
            raise ConfigError(f"trigger {name!r}: a wildcard may only end the name, after / or .")
        if self.if_:
            try:
                check_expression(self.if_, condition=True)
            except ConfigError as exc:
                raise ConfigError(f"trigger {name!r}: if: {exc.message}") from None
        if self.filter is not None:
            check_filter(dict(self.filter), "filter")
        if self.context_filter is not None:
            check_filter(dict(self.context_filter), "context_filter")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": self.event}
        if self.if_:
            out["expression"] = self.if_
        if self.source is not None:
            out["source"] = self.source
        if self.filter is not None:
            out["filter"] = dict(self.filter)
        if self.context_filter is not None:
            out["context_filter"] = dict(self.context_filter)
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class TriggerCron:
    """Start the function on a schedule: 5-field cron, optionally prefixed ``TZ=Zone``."""

    cron: str

    def check(self) -> None:
        from tidings.functions.cron import parse_cron

        parse_cron(self.cron)

    def to_json(self) -> dict[str, Any]:
        return {"cron": self.cron}


Trigger = TriggerEvent | TriggerCron
Handler = Callable[[Any], Any] | Callable[[Any], Awaitable[Any]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Function:
    """A registered function: its slug, triggers, retry policy and handler."""

    app_id: str
    id: str
    name: str
    triggers: tuple[Trigger, ...]
    handler: Handler
    retries: int = DEFAULT_RETRIES
    failure_of: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return f"{self.app_id}-{self.id}"

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.handler)

    def definition(self) -> dict[str, Any]:
        """The JSON the engine stores and routes with."""
        return {
            "id": self.slug,
            "name": self.name,
            "triggers": [t.to_json() for t in self.triggers],
            "retries": self.retries,
            **dict(self.config),
        }


def make_function(
    app_id: str,
    handler: Handler,
    *,
    id: str,
    triggers: Sequence[Trigger],
    name: str | None,
    retries: int,
    failure_of: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> Function:
    if not id or any(c.isspace() for c in id):
        raise ConfigError(f"function id {id!r}: non-empty, without spaces")
    if not triggers:
        raise ConfigError(f"function {id!r} needs at least one trigger")
    if len(triggers) > MAX_TRIGGERS:
        raise ConfigError(f"function {id!r}: at most {MAX_TRIGGERS} triggers")
    if not 0 <= retries <= MAX_RETRIES:
        raise ConfigError(f"function {id!r}: retries must be 0 to {MAX_RETRIES}")
    for trigger in triggers:
        trigger.check()
        if (isinstance(trigger, TriggerEvent) and failure_of is None
                and trigger.event.lower().startswith(RESERVED_PREFIXES)
                and not trigger.event.lower().endswith(
                    ("function.finished", "function.failed", "function.cancelled",
                     "scheduled.timer", "function.invoked"))):
            raise ConfigError(f"function {id!r}: {trigger.event!r} is not an event Tidings emits")
    flow = dict(config or {})
    try:
        parse_flow(flow)
    except ConfigError as exc:
        raise ConfigError(f"function {id!r}: {exc.message}") from None
    return Function(app_id=app_id, id=id, name=name or id, triggers=tuple(triggers),
                    handler=handler, retries=retries, failure_of=failure_of, config=flow)
