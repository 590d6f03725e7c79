"""Specification of the fleet stores' pure parts and of the stub's clock: the full contract runs on every broker in
tests/integration/test_fleet_store.py."""

from __future__ import annotations

import pytest

from taskfleet.brokers.fleet_store import connect_fleet_store
from taskfleet.brokers.rabbitmq._streams import fleet_name, stream_arguments
from taskfleet.brokers.redis._keys import FleetKeys
from taskfleet.brokers.stub import StubBroker, StubFleetStore, reset_fleet_state
from taskfleet.errors import ConfigurationError
from taskfleet.fleet.revocations import Revocation
from taskfleet.settings import BrokerSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_the_stub_expires_records_and_revocations_by_its_clock() -> None:
    clock = Clock()
    store = StubFleetStore("memory://clock", namespace="app", events_max_len=10, clock=clock)
    store.heartbeat("w1", b"record", ttl_s=6)
    store.add_revocations([Revocation("t1", expires_at=clock.now + 10)])

    clock.now += 5.9
    assert (store.workers(), [r.task_id for r in store.revocations()]) == ([b"record"], ["t1"])
    clock.now += 0.2
    assert store.workers() == []
    clock.now += 4
    assert store.revocations() == []


def test_stub_stores_share_state_by_url_and_namespace_until_reset() -> None:
    broker = StubBroker(BrokerSettings(url="memory://shared"))
    connect_fleet_store(broker, namespace="app").heartbeat("w1", b"r", ttl_s=60)

    assert connect_fleet_store(broker, namespace="app").workers() == [b"r"]
    assert connect_fleet_store(broker, namespace="other").workers() == []
    assert connect_fleet_store(StubBroker(BrokerSettings(url="memory://elsewhere")), namespace="app").workers() == []
    reset_fleet_state()
    assert connect_fleet_store(broker, namespace="app").workers() == []


@pytest.mark.parametrize("events_max_len", [0, -1])
def test_a_store_needs_a_namespace_and_a_positive_cap(events_max_len: int) -> None:
    broker = StubBroker(BrokerSettings(url="memory://"))
    with pytest.raises(ConfigurationError):
        connect_fleet_store(broker, namespace="app", events_max_len=events_max_len)
    with pytest.raises(ConfigurationError):
        connect_fleet_store(broker, namespace="")


def test_redis_fleet_keys_of_an_app_share_one_hash_tag() -> None:
    keys = FleetKeys.of("shop")

    names = [keys.workers, keys.revoked, keys.revocations, keys.control, keys.events, keys.worker("h:1"),
             keys.inbox("abc"), keys.inbox_open("abc")]
    assert all(name.startswith("tf:fleet:{shop}:") for name in names)
    assert len(set(names)) == len(names)


@pytest.mark.parametrize(("max_bytes", "segment"), [(25_600, 6_400), (2**30, 4 * 2**20), (100, 1024)])
def test_a_streams_segments_are_a_quarter_of_its_cap_within_bounds(max_bytes: int, segment: int) -> None:
    arguments = stream_arguments(max_bytes=max_bytes, max_age="10m")

    assert arguments == {"x-queue-type": "stream", "x-max-length-bytes": max_bytes,
                         "x-stream-max-segment-size-bytes": segment, "x-max-age": "10m"}


def test_rabbitmq_fleet_names_live_under_the_reserved_prefix() -> None:
    assert fleet_name("shop", "events") == "taskfleet.fleet.shop.events"
