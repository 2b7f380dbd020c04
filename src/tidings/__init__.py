"""Tidings: a self-hostable event platform for Python teams.

Send events with :class:`Tidings`; run the server with ``tidings dev`` or ``tidings serve``.
"""

from tidings.errors import (
    ConfigError,
    EncryptionError,
    EventsInvalid,
    PayloadTooLarge,
    RequestRejected,
    SendError,
    StorageError,
    TidingsError,
    Unauthorized,
)
from tidings.sdk import Event, EventRecord, Tidings

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "EncryptionError",
    "Event",
    "EventRecord",
    "EventsInvalid",
    "PayloadTooLarge",
    "RequestRejected",
    "SendError",
    "StorageError",
    "Tidings",
    "TidingsError",
    "Unauthorized",
    "__version__",
]
