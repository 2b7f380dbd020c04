"""Native functions for the dashboard's browser tests (``tidings dev -a
tests.dashboard.shop_app:client --retry-interval 0.05``): steps, a retry, sleeps."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import tidings

client = tidings.Tidings(app_id="dash-shop")
FAILED_ONCE: set[str] = set()


@client.function(id="checkout", trigger=tidings.TriggerEvent(event="shop/checkout"))
async def checkout(ctx: tidings.Context) -> dict[str, Any]:
    cart = await ctx.step.run("load-cart", lambda: {"items": ctx.event.data.get("items", 1)})

    def charge() -> str:
        if ctx.event.id not in FAILED_ONCE:  # the first attempt fails, the retry succeeds
            FAILED_ONCE.add(ctx.event.id)
            raise RuntimeError("card declined <script>alert(1)</script>")
        return "charged"

    charged = await ctx.step.run("charge-card", charge)
    await ctx.step.sleep("cool-down", timedelta(milliseconds=300))
    await ctx.step.run("send-receipt", lambda: "sent")
    return {"cart": cart, "charged": charged}


@client.function(id="nap", trigger=tidings.TriggerEvent(event="shop/nap"))
async def nap(ctx: tidings.Context) -> str:
    await ctx.step.run("before", lambda: "awake")
    await ctx.step.sleep("long-nap", timedelta(hours=1))
    return "rested"


@client.function(id="quick", trigger=tidings.TriggerEvent(event="shop/quick"))
async def quick(ctx: tidings.Context) -> int:
    return int(ctx.event.data.get("n", 0))


@client.function(id="dawdle", trigger=tidings.TriggerEvent(event="shop/dawdle"))
async def dawdle(ctx: tidings.Context) -> str:
    """Ends two seconds after it started, on its own: nothing else happens meanwhile."""
    await ctx.step.sleep("a-while", timedelta(seconds=2))
    return "done"
