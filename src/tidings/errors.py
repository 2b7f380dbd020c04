"""Errors raised by Tidings.

The hierarchy::

    TidingsError
    ├── ConfigError             settings or command-line values that cannot work
    ├── StorageError            the database refused or could not be reached
    │   ├── MigrationError      the schema is not at a version this code understands
    │   ├── DatabaseUnavailable the database cannot be reached or cannot write for now
    │   └── StorageStopped      this process can no longer use its database: restart it
    ├── EncryptionError         a ciphertext cannot be read with the configured keys
    ├── FunctionError           raised by or into user functions
    │   ├── NonRetriableError   fail the run now, without retries
    │   ├── RetryAfterError     retry, but not before a given time
    │   └── StepError           a step failed after its retries (or an invoked function failed)
    ├── RequestRejected         the server refused a request (carries status and message)
    │   ├── Unauthorized        the key is missing, unknown or revoked
    │   ├── PayloadTooLarge     the body, an event or the event count is over a limit
    │   ├── Overloaded          over an admission bound: 503, retry after a while
    │   └── EventsInvalid       one or more events failed validation
    └── SendError               the SDK could not deliver events (carries the server's message)

Each class's docstring is its default message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class TidingsError(Exception):
    """Tidings could not do what was asked."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (type(self).__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0])


class ConfigError(TidingsError):
    """The configuration is invalid."""


class StorageError(TidingsError):
    """The database could not complete the operation."""


class MigrationError(StorageError):
    """The database schema is at a version this code does not know."""


class DatabaseUnavailable(StorageError):
    """The database cannot be reached or cannot write for now; try again later."""


class StorageStopped(StorageError):
    """The storage of this process stopped working for good; restart the process."""


class EncryptionError(TidingsError):
    """A ciphertext cannot be decrypted with the configured keys."""


class RequestRejected(TidingsError):
    """The request was rejected."""

    status: int = 400

    def __init__(self, message: str | None = None, *, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class Unauthorized(RequestRejected):
    """Event key not found"""

    status = 401


class PayloadTooLarge(RequestRejected):
    """The request is over a size limit."""

    status = 413


class Overloaded(RequestRejected):
    """Tidings is over its load limits: retry later."""

    status = 503

    def __init__(self, message: str | None = None, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", b"%d" % self.retry_after)]


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one field of one event of a request."""

    index: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"events[{self.index}]" + (f".{self.field}" if self.field else "")
        return f"{where}: {self.message}"


class EventsInvalid(RequestRejected):
    """One or more events are invalid."""

    status = 400

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = tuple(errors)
        count = len(self.errors)
        noun = "event is" if count == 1 else "events are"
        super().__init__(f"{count} {noun} invalid: " + "; ".join(map(str, self.errors)))


class SendError(TidingsError):
    """The events could not be sent."""

    def __init__(self, message: str | None = None, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class FunctionError(TidingsError):
    """The function failed."""


class NonRetriableError(FunctionError):
    """The function failed and must not be retried."""


class RetryAfterError(FunctionError):
    """The function failed; retry it after the given delay or at the given time."""

    def __init__(self, message: str | None = None, retry_after: Any = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StepError(FunctionError):
    """A step failed after its retries; raised where the function awaited it.

    ``name``, ``message``, ``stack`` and ``cause`` (the error that caused it, as recorded: a
    dict of the same shape, or None) are the step's recorded error, whichever SDK or native
    function reported it.
    """

    def __init__(self, message: str, *, name: str = "Error", stack: str | None = None,
                 cause: Any = None) -> None:
        super().__init__(message)
        self.name = name
        self.stack = stack
        self.cause = cause

    @classmethod
    def from_record(cls, error: Any) -> StepError:
        """The StepError of a step whose recorded result is ``{"error": error}``."""
        record = error if isinstance(error, dict) else {}
        stack = record.get("stack")
        return cls(str(record.get("message", "step failed")),
                   name=str(record.get("name") or "Error"),
                   stack=stack if isinstance(stack, str) else None, cause=record.get("cause"))

    def record(self) -> dict[str, Any]:
        """The error a run that did not catch this keeps."""
        out: dict[str, Any] = {"name": self.name, "message": self.message,
                               "stack": self.stack}
        if self.cause is not None:
            out["cause"] = self.cause
        return out
