"""The Redis broker's named key lists (``QueueKeys``) match the ``KEYS`` each Lua script declares in its header."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from taskfleet.brokers.redis._keys import FETCH_KEYS_PER_QUEUE, QUEUES_KEY, QueueKeys
from taskfleet.brokers.redis._scripts import script_source

KEYS = QueueKeys.of("q")
_NAMES = {getattr(KEYS, name): name for name in QueueKeys.__dataclass_fields__} | {QUEUES_KEY: "tf:queues"}


def declared_keys(script: str) -> list[str]:
    """The names on the ``-- KEYS:`` line of ``lua/<script>.lua``."""
    body = script_source(script).split("\n-- KEYS:", 1)[1]
    return [name.strip() for name in body.split("\n", 1)[0].split(",")]


@pytest.mark.parametrize(
    ("script", "keys"),
    [("enqueue", QueueKeys.for_enqueue), ("settle", QueueKeys.for_settle), ("dead_letter", QueueKeys.for_dead_letter),
     ("depth", QueueKeys.for_depth), ("purge", QueueKeys.for_purge), ("requeue_dead", QueueKeys.for_requeue_dead)],
)
def test_each_scripts_keys_come_in_the_order_its_header_declares(
    script: str, keys: Callable[[QueueKeys], list[str]]
) -> None:
    assert [_NAMES[key] for key in keys(KEYS)] == declared_keys(script)


def test_fetch_takes_every_key_of_each_queue_in_layout_order() -> None:
    source = script_source("fetch")

    assert re.search(rf"^local K = {FETCH_KEYS_PER_QUEUE}$", source, re.MULTILINE)
    assert declared_keys("fetch") == ["per queue", f"{FETCH_KEYS_PER_QUEUE} keys: ready", *[
        _NAMES[key] for key in KEYS.all()[1:]]]


def test_the_keys_of_a_queue_share_its_hash_tag() -> None:
    assert KEYS.ready == "tf:{q}:ready"
    assert all(key.startswith("tf:{q}:") for key in KEYS.all())
