"""The Tidings Python SDK."""

from tidings.sdk.client import Event, EventRecord, Tidings

__all__ = ["Event", "EventRecord", "Tidings"]
