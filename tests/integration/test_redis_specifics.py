"""Redis-only internals of the Redis broker, beyond the contract that ``test_broker_conformance.py`` checks."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from taskfleet.brokers.base import Outgoing
from taskfleet.brokers.redis import RedisBroker
from taskfleet.brokers.redis._broker import ENQUEUE_CHUNK
from taskfleet.brokers.redis._keys import QUEUES_KEY, QueueKeys
from taskfleet.brokers.redis._scripts import script_source
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


def calls(stats: redis.Redis, command: str) -> int:
    """How many times the server ran ``command`` since the last CONFIG RESETSTAT."""
    return int(stats.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def batch(count: int, data: bytes = b"x") -> list[Outgoing]:
    """Messages m0, m1, ... for queue q."""
    return [Outgoing(queue="q", message_id=f"m{i}", data=data) for i in range(count)]


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


def test_acking_a_batch_of_deliveries_is_one_script_call(broker: RedisBroker, stats: redis.Redis) -> None:
    broker.enqueue_many(batch(8))
    deliveries = broker.fetch(["q"], max_messages=8, timeout_s=0)
    stats.config_resetstat()

    broker.ack(deliveries)

    assert calls(stats, "evalsha") == 1
    assert broker.queue_depth("q").total == 0


def test_enqueue_many_stores_a_batch_with_one_script_call_per_chunk(broker: RedisBroker, stats: redis.Redis) -> None:
    stats.config_resetstat()

    broker.enqueue_many(batch(2 * ENQUEUE_CHUNK + 1))

    assert calls(stats, "evalsha") == 3
    assert broker.queue_depth("q").ready == 2 * ENQUEUE_CHUNK + 1


def test_a_batch_that_names_an_id_twice_stores_it_once_as_its_last_copy(broker: RedisBroker) -> None:
    broker.enqueue_many([
        Outgoing(queue="q", message_id="m1", data=b"first"),
        Outgoing(queue="q", message_id="m2", data=b"x"),
        Outgoing(queue="q", message_id="m1", data=b"last", delay_s=0.2),
    ])

    assert broker.queue_depth("q").ready == 1
    assert broker.queue_depth("q").delayed == 1
    deliveries = broker.fetch(["q"], max_messages=10, timeout_s=2)
    deliveries += broker.fetch(["q"], max_messages=10, timeout_s=2)
    assert sorted((d.message_id, d.data) for d in deliveries) == [("m1", b"last"), ("m2", b"x")]


def test_a_batch_that_enqueues_a_leased_id_again_takes_the_old_lease_away(broker: RedisBroker) -> None:
    broker.enqueue("q", "m1", b"old")
    (old,) = broker.fetch(["q"], max_messages=1, timeout_s=0)

    broker.enqueue_many(batch(3, data=b"new"))
    broker.ack([old])  # a no-op: its lease went with the old copy

    again = broker.fetch(["q"], max_messages=10, timeout_s=0)
    assert sorted(d.message_id for d in again) == ["m0", "m1", "m2"]
    assert {d.data for d in again} == {b"new"}
    assert [d.delivery_count for d in again if d.message_id == "m1"] == [2]


def test_a_fetch_after_a_short_one_starts_with_the_blocking_wait(broker: RedisBroker, stats: redis.Redis) -> None:
    broker.enqueue("q", "m1", b"x")
    broker.ack(broker.fetch(["q"], max_messages=4, timeout_s=0))  # short: q is empty now
    stats.config_resetstat()

    assert broker.fetch(["q"], max_messages=4, timeout_s=0.2) == []

    assert (calls(stats, "blpop"), calls(stats, "evalsha")) == (1, 1)  # one write: BLPOP, then the fetch script


def test_a_woken_fetch_gets_its_message_without_another_round_trip(broker: RedisBroker, stats: redis.Redis) -> None:
    producer = RedisBroker(BrokerSettings(url=broker.settings.url))
    broker.fetch(["q"], max_messages=1, timeout_s=0)
    thread = threading.Timer(0.3, lambda: producer.enqueue("q", "m1", b"x"))
    stats.config_resetstat()
    thread.start()

    deliveries = broker.fetch(["q"], max_messages=1, timeout_s=5)
    thread.join()
    producer.close()

    assert [d.message_id for d in deliveries] == ["m1"]
    assert (calls(stats, "blpop"), calls(stats, "evalsha")) == (1, 2)  # the enqueue, and the fetch sent with BLPOP


def test_a_delayed_message_due_after_a_short_fetch_is_fetched_when_due(broker: RedisBroker) -> None:
    broker.enqueue("q", "later", b"x", delay_s=0.4)
    assert broker.fetch(["q"], max_messages=4, timeout_s=0) == []
    started = time.monotonic()

    deliveries = broker.fetch(["q"], max_messages=4, timeout_s=3)

    assert [d.message_id for d in deliveries] == ["later"]
    assert time.monotonic() - started < 0.9  # by its due time, not the 1 s ceiling of one blocking wait


def test_a_blocking_fetch_reloads_its_script_after_the_server_forgot_it(
    broker: RedisBroker, stats: redis.Redis
) -> None:
    broker.enqueue("q", "m1", b"x")
    broker.ack(broker.fetch(["q"], max_messages=4, timeout_s=0))
    broker.enqueue("q", "m2", b"x")
    stats.script_flush()

    deliveries = broker.fetch(["q"], max_messages=4, timeout_s=2)  # BLPOP returns at once; the fetch meets NOSCRIPT

    assert [d.message_id for d in deliveries] == ["m2"]


def test_a_forked_process_talks_to_the_server_on_connections_of_its_own(broker: RedisBroker) -> None:
    broker.enqueue("q", "from-parent", b"x")  # the parent now holds an open connection

    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        try:
            broker.enqueue("q", "from-child", b"x")
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    deliveries = broker.fetch(["q"], max_messages=4, timeout_s=0)
    assert sorted(d.message_id for d in deliveries) == ["from-child", "from-parent"]


def test_releasing_a_batch_uncounts_only_the_deliveries_still_held(broker: RedisBroker) -> None:
    broker.enqueue_many(batch(3))
    m0, m1, m2 = broker.fetch(["q"], max_messages=3, timeout_s=0)
    broker.nack([m2])
    broker.release([m0, m1])
    m0, m1, m2 = broker.fetch(["q"], max_messages=3, timeout_s=0)  # delivered 1, 1 and 2 times
    broker.enqueue("q", m1.message_id, b"again")  # m1's lease is lost

    broker.release([m0, m1, m2])

    again = {d.message_id: d.delivery_count for d in broker.fetch(["q"], max_messages=3, timeout_s=0)}
    assert again == {m0.message_id: 1, m1.message_id: 2, m2.message_id: 2}


@pytest.mark.parametrize("version", ["as reported", "hidden, as before Redis 7.0"])
def test_the_settle_script_keeps_lost_leases_alone_whether_or_not_it_knows_the_server_version(
    broker: RedisBroker, stats: redis.Redis, version: str
) -> None:
    source = script_source("settle")
    if version != "as reported":
        source = source.replace("(redis.REDIS_VERSION_NUM or 0)", "0")
    broker.enqueue_many(batch(3))
    first, second, third = broker.fetch(["q"], max_messages=3, timeout_s=0)
    broker.enqueue("q", second.message_id, b"again")  # second's lease is lost
    keys = QueueKeys.of("q").for_settle()
    leases = [x for d in (first, second, third, first) for x in (d.message_id, d.delivery_count)]

    settled = stats.eval(source, len(keys), *keys, "ack", 1000, *leases)

    assert settled == 2
    assert [d.message_id for d in broker.fetch(["q"], max_messages=3, timeout_s=0)] == [second.message_id]
    assert stats.sismember(QUEUES_KEY, "q")
