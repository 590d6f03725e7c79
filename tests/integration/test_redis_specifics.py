"""Redis-only internals of the Redis broker, beyond the contract that ``test_broker_conformance.py`` checks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from taskfleet.brokers.base import Outgoing
from taskfleet.brokers.redis import RedisBroker
from taskfleet.settings import BrokerSettings

pytestmark = pytest.mark.integration


@pytest.fixture
def broker(redis_url: str) -> Iterator[RedisBroker]:
    broker = RedisBroker(BrokerSettings(url=redis_url, visibility_timeout_s=1))
    yield broker
    broker.close()


@pytest.fixture
def stats(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def test_an_idle_consumer_blocks_instead_of_spinning_on_stale_wake_up_tokens(
    broker: RedisBroker, stats: redis.Redis
) -> None:
    for i in range(20):
        broker.enqueue("q", f"m{i}", b"x")  # 20 wake-up tokens that nobody waited for
    broker.ack(broker.fetch(["q"], max_messages=20, timeout_s=0))
    stats.config_resetstat()

    assert broker.fetch(["q"], max_messages=1, timeout_s=0.5) == []

    calls = stats.info("commandstats").get("cmdstat_blpop", {}).get("calls", 0)
    assert calls == 1


def test_every_operation_reloads_its_script_after_the_server_forgot_them(
    broker: RedisBroker, stats: redis.Redis
) -> None:
    broker.enqueue("q", "warm-up", b"x")
    broker.ack(broker.fetch(["q"], max_messages=1, timeout_s=0))

    stats.script_flush()  # what a restarted server looks like to a connected client: NOSCRIPT

    broker.enqueue("q", "single", b"x")
    broker.enqueue_many([Outgoing(queue="q", message_id=f"batch{i}", data=b"x") for i in range(2)])
    first, second, third = broker.fetch(["q"], max_messages=3, timeout_s=0)
    stats.script_flush()
    broker.ack([first])
    broker.nack([second])
    broker.dead_letter(third, "bad")
    stats.script_flush()
    assert broker.purge("q") == 1
    assert [d.message_id for d in broker.dead_letters("q")] == ["batch1"]
