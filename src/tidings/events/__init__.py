"""Events: the values that flow through Tidings, and how requests become them."""

from tidings.events.model import NewEvent, StoredEvent
from tidings.events.parse import parse_events

__all__ = ["NewEvent", "StoredEvent", "parse_events"]
