"""The ingest → router hand-off: where ingest hands the events it stores.

``Ingest`` is built with the process's ``Handoff``. When a runtime runs in the process it
attaches its router (``Runtime.start``); then, where the storage can (SQLite), events are routed
in the transaction that stores them (``route``), and the ones still to route after the commit
are handed over as one ``Stored`` value (``stored``). With no router attached nothing is routed
here: the events wait in the database for the sweeper of whichever process routes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tidings.router.route import Routed
from tidings.storage.base import EventRow
from tidings.storage.tx import Tx


@dataclass(frozen=True, slots=True, kw_only=True)
class Stored:
    """Events committed and not routed in their transaction: ``due`` (their ids) are due now;
    ``delayed``: events due later were stored too."""

    due: list[str]
    delayed: bool = False


class LocalRouter(Protocol):
    """A router of this process (``engine/runtime.py``)."""

    def route(self, tx: Tx, rows: list[EventRow], now: int) -> Routed:
        """Route ``rows`` in the transaction that stores them."""

    def routed(self, result: Routed) -> None:
        """The transaction that ran ``route`` committed."""

    def abandoned(self, result: Routed) -> None:
        """The transaction that ran ``route`` failed."""

    def stored(self, batch: Stored) -> None:
        """Route these events soon (they are committed)."""


class Handoff:
    """The routers attached in this process: each hears of what is stored; the last one
    attached with ``inline`` routes in the storing transaction."""

    def __init__(self) -> None:
        self._routers: list[LocalRouter] = []
        self._inline: LocalRouter | None = None

    def attach(self, router: LocalRouter, *, inline: bool) -> None:
        self._routers.append(router)
        if inline:
            self._inline = router

    def detach(self, router: LocalRouter) -> None:
        if router in self._routers:
            self._routers.remove(router)
        if self._inline is router:
            self._inline = None

    @property
    def inline(self) -> LocalRouter | None:
        """The router that routes in the storing transaction, if any."""
        return self._inline

    def stored(self, batch: Stored) -> None:
        """Hand committed events to every attached router (none: the sweeper finds them)."""
        for router in self._routers:
            router.stored(batch)
