"""Native functions triggered by events a Trigger.dev v2 client sends
(``tidings dev -a tests.acceptance.triggerdev_native:client``): v2's ``payload`` is their
``data``."""

from __future__ import annotations

from typing import Any

import tidings

client = tidings.Tidings("v2-events")


@client.function(id="welcome", trigger=tidings.TriggerEvent(event="new.user"))
def welcome(ctx: tidings.Context) -> dict[str, Any]:
    return {"data": ctx.event.data}


@client.function(id="later", trigger=tidings.TriggerEvent(event="v2.later"))
def later(ctx: tidings.Context) -> dict[str, Any]:
    return {"data": ctx.event.data}
