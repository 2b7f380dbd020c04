"""Function values, built from rows explicitly: a function as registered, with its flow
control parsed once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from tidings.functions.flow_config import FlowControl, flow_of


def loads(value: str | bytes | None) -> Any:
    return None if value is None else msgspec.json.decode(value)


def dumps(value: Any) -> str:
    return msgspec.json.encode(value).decode()


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionRow:
    id: str
    env_id: str
    app_id: str
    slug: str
    name: str
    queue: str
    url: str | None
    config: dict[str, Any]
    archived_at: int | None
    flow: FlowControl | None = None  # None: no flow control, and nothing to pay for it

    @classmethod
    def from_row(cls, r: tuple[Any, ...]) -> FunctionRow:
        config = loads(r[7])
        return cls(id=r[0], env_id=r[1], app_id=r[2], slug=r[3], name=r[4], queue=r[5], url=r[6],
                   config=config, archived_at=r[8], flow=flow_of(config))

    @property
    def retries(self) -> int:
        return int(self.config.get("retries", 4))

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "slug": self.slug, "name": self.name, "app_id": self.app_id,
                "queue": self.queue, "url": self.url, "config": self.config,
                "archived": self.archived_at is not None}
