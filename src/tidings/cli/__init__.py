"""The ``tidings`` command, by audience: the launchers (``launch.py``: dev, serve, worker),
local administration against the database (``admin.py``: migrate, keys) and the client of a
running server (``remote.py``: send, events, runs, replay)."""

from __future__ import annotations

from typing import Any

import click

from tidings.cli import admin, launch, remote
from tidings.errors import TidingsError


class _Group(click.Group):
    """Every ``TidingsError`` of every command ends as one ``Error: ...`` line and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TidingsError as exc:
            raise click.ClickException(exc.message) from None


@click.group(cls=_Group)
@click.version_option(package_name="tidings")
def main() -> None:
    """Tidings: events in, durable functions out."""


for command in (launch.dev, launch.serve, launch.worker, admin.migrate, admin.keys,
                remote.send, remote.events, remote.runs, remote.replay):
    main.add_command(command)
