"""Tidings: a self-hostable event platform for Python teams.

Send events with :class:`Tidings`; register durable functions with ``@client.function``; run the
server with ``tidings dev`` or ``tidings serve`` and workers with ``tidings worker``.
"""

from tidings.errors import (
    ConfigError,
    EncryptionError,
    EventsInvalid,
    FunctionError,
    NonRetriableError,
    PayloadTooLarge,
    RequestRejected,
    RetryAfterError,
    SendError,
    StepError,
    StorageError,
    TidingsError,
    Unauthorized,
)
from tidings.sdk import Event, EventRecord, Tidings
from tidings.sdk.context import Context, ReceivedEvent, Step, SyncStep
from tidings.sdk.flow import (
    Batch,
    Cancel,
    Concurrency,
    Debounce,
    Priority,
    RateLimit,
    Singleton,
    Throttle,
    Timeouts,
)
from tidings.sdk.function import Function, TriggerCron, TriggerEvent
from tidings.version import VERSION as __version__

__all__ = [
    "Batch",
    "Cancel",
    "Concurrency",
    "ConfigError",
    "Context",
    "Debounce",
    "EncryptionError",
    "Event",
    "EventRecord",
    "EventsInvalid",
    "Function",
    "FunctionError",
    "NonRetriableError",
    "PayloadTooLarge",
    "Priority",
    "RateLimit",
    "ReceivedEvent",
    "RequestRejected",
    "RetryAfterError",
    "SendError",
    "Singleton",
    "Step",
    "StepError",
    "StorageError",
    "SyncStep",
    "Throttle",
    "Tidings",
    "TidingsError",
    "Timeouts",
    "TriggerCron",
    "TriggerEvent",
    "Unauthorized",
    "__version__",
]
