"""The registry: every live function, indexed by the event names that start it.

It is rebuilt from the database when the registry version there changes, so every process
routes with the same functions shortly after an app registers.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from tidings.functions.expressions import matches
from tidings.functions.filters import filter_matches
from tidings.functions.model import FunctionRow
from tidings.functions.registration import live_functions, registry_version
from tidings.storage.tx import Tx

INTERNAL = ("tidings/", "inngest/")


def aliases(name: str) -> tuple[str, ...]:
    """An internal event answers to both prefixes (``tidings/x`` and ``inngest/x``)."""
    for prefix in INTERNAL:
        if name.startswith(prefix):
            rest = name[len(prefix):]
            return tuple(p + rest for p in INTERNAL)
    return (name,)


@dataclass(frozen=True, slots=True)
class Entry:
    fn: FunctionRow
    trigger: dict[str, Any]

    def accepts(self, event: dict[str, Any], source: str, context: Any) -> bool:
        t = self.trigger
        if "source" in t and t["source"] != source:
            return False
        if "filter" in t and not filter_matches(t["filter"], event.get("data")):
            return False
        if "context_filter" in t and not filter_matches(t["context_filter"], context):
            return False
        expression = t.get("expression")
        return not expression or matches(expression, {"event": event},
                                         f"function {self.fn.slug}")


@dataclass(slots=True)
class _EnvIndex:
    exact: dict[str, list[Entry]] = field(default_factory=lambda: defaultdict(list))
    wildcards: list[tuple[str, Entry]] = field(default_factory=list)
    by_slug: dict[str, FunctionRow] = field(default_factory=dict)


class Registry:
    def __init__(self) -> None:
        self.version = -1
        self._envs: dict[str, _EnvIndex] = {}
        self.crons: list[tuple[FunctionRow, str]] = []
        self._listening: dict[tuple[str, str], bool] = {}
        self._by_id: dict[str, FunctionRow] = {}
        self._cancels: set[tuple[str, str]] = set()

    def refresh(self, tx: Tx) -> bool:
        """Reload when the database's registry version moved; True when it did."""
        version = registry_version(tx)
        if version == self.version:
            return False
        self.load(live_functions(tx), version)
        return True

    def load(self, rows: list[FunctionRow], version: int) -> None:
        envs: dict[str, _EnvIndex] = {}
        crons = []
        self._by_id = {fn.id: fn for fn in rows}
        self._cancels = {(fn.env_id, c.event) for fn in rows if fn.flow is not None
                         for c in fn.flow.cancel}
        for fn in rows:
            index = envs.setdefault(fn.env_id, _EnvIndex())
            index.by_slug[fn.slug] = fn
            for trigger in fn.config.get("triggers", []):
                if "cron" in trigger:
                    crons.append((fn, str(trigger["cron"])))
                    continue
                name = str(trigger.get("event", ""))
                entry = Entry(fn, trigger)
                if name.endswith("*"):
                    index.wildcards.append((name[:-1], entry))
                else:
                    index.exact[name].append(entry)
        self._envs, self.crons, self.version = envs, crons, version
        self._listening = {}

    def function(self, env_id: str, slug: str) -> FunctionRow | None:
        index = self._envs.get(env_id)
        return index.by_slug.get(slug) if index else None

    def by_id(self, function_id: str) -> FunctionRow | None:
        return self._by_id.get(function_id)

    def functions(self) -> list[FunctionRow]:
        return [fn for index in self._envs.values() for fn in index.by_slug.values()]

    def listens(self, env_id: str, name: str) -> bool:
        """True when some function of the environment triggers on events of that name."""
        known = self._listening.get((env_id, name))
        if known is not None:
            return known
        index = self._envs.get(env_id)
        names = aliases(name)
        found = index is not None and (any(n in index.exact for n in names) or any(
            n.startswith(prefix) for prefix, _ in index.wildcards for n in names))
        self._listening[(env_id, name)] = found
        return found

    def cancels(self, env_id: str, name: str) -> bool:
        """True when some function of the environment is cancelled by events of that name."""
        return bool(self._cancels) and any((env_id, n) in self._cancels for n in aliases(name))

    def match(self, env_id: str, event: dict[str, Any], source: str = "tidings",
              context: Any = None) -> list[FunctionRow]:
        """The functions an event starts; a function matched by several triggers once."""
        index = self._envs.get(env_id)
        if index is None:
            return []
        names = aliases(event["name"])
        candidates = [e for n in names for e in index.exact.get(n, ())]
        if index.wildcards:
            candidates.extend(e for prefix, e in index.wildcards
                              if any(n.startswith(prefix) for n in names))
        chosen: dict[str, FunctionRow] = {}
        for entry in candidates:
            if entry.fn.id not in chosen and entry.accepts(event, source, context):
                chosen[entry.fn.id] = entry.fn
        return list(chosen.values())
