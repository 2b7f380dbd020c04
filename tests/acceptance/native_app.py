"""Native Tidings functions (``tidings dev -a tests.acceptance.native_app:client``) that invoke,
and are invoked by, functions of an Inngest SDK app: both go through the same invocations."""

from __future__ import annotations

from typing import Any

import tidings

client = tidings.Tidings("native-app")


@client.function(id="relay", trigger=tidings.TriggerEvent(event="native/relay"))
async def relay(ctx: tidings.Context) -> dict[str, Any]:
    doubled = await ctx.step.invoke("call-py", function="py-app-double", data={"x": 5})
    return {"doubled": doubled}


@client.function(id="triple", trigger=tidings.TriggerEvent(event="native/triple"))
def triple(ctx: tidings.Context) -> dict[str, Any]:
    return {"z": ctx.event.data["x"] * 3}
