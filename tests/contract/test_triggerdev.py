"""Trigger.dev v2 keys and event semantics on both backends: keys sealed and found by hash,
revoked, re-sealed under a new master key; an id unique for good, a delayed event rescheduled
by sending its id again, a delivered or cancelled one left as it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_settings
from tidings.core import Core
from tidings.crypto import Keyring, new_key_text
from tidings.errors import Unauthorized
from tidings.events.model import NewEvent
from tidings.ids import now_ms
from tidings.keys import ensure_env
from tidings.storage.base import Storage
from tidings.triggerdev import events as v2_events
from tidings.triggerdev.keys import KEY_RE, TriggerKeys, key_word


def keyring() -> Keyring:
    return Keyring.parse(new_key_text())


def test_key_words_follow_v2_and_fit_the_client_pattern() -> None:
    assert [key_word(n) for n in ("production", "staging", "dev", "QA-2", "42")] == [
        "prod", "stg", "dev", "qa", "env"]


async def test_keys_are_sealed_found_revoked_and_rewrapped(storage: Storage) -> None:
    ring = keyring()
    keys = TriggerKeys(storage, ring, dev=False)
    secret, made = await keys.create("production")

    assert KEY_RE.fullmatch(secret) and secret.startswith("tr_prod_")
    assert made.prefix == "tr_prod_" + secret[8:12] and secret not in str(await keys.all())
    env = await keys.env_for(f"Bearer {secret}")
    assert env.name == "production" and env.id == made.env_id
    assert await keys.secrets_of(env.id) == [secret]

    newer = ring.rotated()
    assert await keys.rewrap(newer) == 1
    assert await TriggerKeys(storage, newer, dev=False).secrets_of(env.id) == [secret]

    assert await keys.revoke(made.id)
    assert not await keys.revoke(made.id)
    for wrong in (f"Bearer {secret}", "Bearer tr_prod_unknown1", "Bearer tdk_x", "Basic x", ""):
        with pytest.raises(Unauthorized):
            await keys.env_for(wrong)
    assert await keys.secrets_of(env.id) == []


async def test_dev_takes_any_dev_key_or_none(storage: Storage) -> None:
    keys = TriggerKeys(storage, keyring(), dev=True)
    assert (await keys.env_for("Bearer tr_dev_anything1")).name == "dev"
    assert (await keys.env_for("")).name == "dev"
    with pytest.raises(Unauthorized, match="tr_dev_"):
        await keys.env_for("Bearer tr_prod_abc")


def event(key: str | None, data: bytes = b"{}", deliver_at: int | None = None) -> NewEvent:
    return NewEvent(name="v2.test", data=data, user={}, key=key, ts=now_ms(),
                    deliver_at=deliver_at)


@pytest.fixture
async def core(db_url: str, tmp_path: Path) -> Core:
    running = await Core.start(make_settings(db_url, tmp_path))
    yield running  # type: ignore[misc]
    await running.close()


async def test_ids_hold_for_good_and_resending_reschedules(core: Core) -> None:
    env = await core.storage.write(lambda tx: ensure_env(tx, "dev"))
    now = now_ms()
    later = now + 3_600_000
    [first] = await v2_events.send(core, env.id, [event("a", b'{"n":1}', later)], now)
    [moved] = await v2_events.send(core, env.id, [event("a", b'{"n":2}', now + 1000)], now)

    assert moved.id == first.id and moved.data == {"n": 2} and moved.deliver_at == now + 1000
    [again] = await v2_events.send(core, env.id, [event("a", b'{"n":3}')], now)
    assert again.id == first.id and again.deliver_at == now  # no delay: due now
    found = await v2_events.find(core, env.id, "a")
    assert found is not None and found.id == first.id
    assert (await v2_events.find(core, env.id, first.id)) == found  # Tidings' id works too
    assert await v2_events.find(core, env.id, "nope") is None

    # Cancelled: stays cancelled, however often it is sent again.
    cancelled = await core.storage.write(
        lambda tx: v2_events.cancel(tx, env.id, "a", now_ms()))
    assert cancelled == first.id
    [kept] = await v2_events.send(core, env.id, [event("a", b'{"n":4}', later)], now)
    assert kept.cancelled_at is not None and kept.data == {"n": 3}


async def test_a_delivered_event_is_returned_unchanged(core: Core) -> None:
    env = await core.storage.write(lambda tx: ensure_env(tx, "dev"))
    now = now_ms()
    [sent] = await v2_events.send(core, env.id, [event("b", b'{"n":1}')], now)
    # Delivered (here by hand: no router runs in this test).
    await core.storage.write(lambda tx: tx.all("deliver_batch", (
        now, f'["{sent.id}"]' if tx.dialect == "sqlite" else [sent.id], now)))

    [twice, other] = await v2_events.send(
        core, env.id, [event("b", b'{"n":2}', now + 60_000), event("c")], now)

    assert twice.id == sent.id and twice.data == {"n": 1} and twice.delivered_at == now
    assert twice.deliver_at is None and other.id != sent.id
