"""Redis wake notices on a real server: the enqueue that makes a queue's ready set non-empty publishes the queue's
name on ``tf:{Q}:wake`` in the same script call, and ``RedisWakeFeed`` receives it. The operator's wake listener
(``taskfleet.operator.wake``) relies on exactly this; the poll stays the source of truth."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from taskfleet.brokers.base import Outgoing
from taskfleet.brokers.redis import RedisBroker, RedisWakeFeed
from taskfleet.brokers.redis._keys import QueueKeys
from taskfleet.brokers.wake_feed import WakeFeed, connect_wake_feed
from taskfleet.errors import BrokerError
from taskfleet.settings import BrokerSettings
from tests.support.servers import RedisServer

pytestmark = pytest.mark.integration

WAIT_S = 2.0


@pytest.fixture
def broker(redis_url: str) -> Iterator[RedisBroker]:
    broker = RedisBroker(BrokerSettings(url=redis_url))
    yield broker
    broker.close()


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def feed(redis_url: str) -> Iterator[RedisWakeFeed]:
    feed = connect_wake_feed(redis_url, socket_timeout_s=3.0)
    assert isinstance(feed, RedisWakeFeed)
    yield feed
    feed.close()


def following(feed: WakeFeed, *queues: str) -> WakeFeed:
    """``feed`` following ``queues``, their subscriptions confirmed."""
    feed.follow(queues)
    confirmed: set[str] = set()
    deadline = time.monotonic() + WAIT_S
    while confirmed != set(queues) and time.monotonic() < deadline:
        confirmed |= feed.receive(0.2).confirmed
    assert confirmed == set(queues)
    return feed


def receive_for(feed: WakeFeed, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        feed.receive(0.1)


def notices(feed: WakeFeed, within_s: float = 0.3) -> list[str]:
    """Every queue noticed within ``within_s`` seconds, once per notice batch."""
    got: list[str] = []
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        got += sorted(feed.receive(deadline - time.monotonic()).noticed)
    return got


def test_the_first_message_into_an_empty_queue_publishes_one_notice_and_the_next_ones_none(
    broker: RedisBroker, feed: RedisWakeFeed
) -> None:
    following(feed, "orders")

    broker.enqueue("orders", "m1", b"x")
    first = notices(feed)
    for i in range(2, 50):
        broker.enqueue("orders", f"m{i}", b"x")

    assert first == ["orders"]
    assert notices(feed) == [], "a queue with messages waiting sends no more notices"


def test_a_queue_emptied_by_a_consumer_notifies_again_on_its_next_message(
    broker: RedisBroker, feed: RedisWakeFeed
) -> None:
    following(feed, "orders")
    broker.enqueue("orders", "m1", b"x")
    assert notices(feed) == ["orders"]

    broker.ack(broker.fetch(["orders"], max_messages=10, timeout_s=0))
    broker.enqueue("orders", "m2", b"x")

    assert notices(feed) == ["orders"]


def test_a_batch_into_an_empty_queue_publishes_one_notice_per_queue(
    broker: RedisBroker, feed: RedisWakeFeed
) -> None:
    following(feed, "a", "b")

    broker.enqueue_many([Outgoing(queue=q, message_id=f"{q}{i}", data=b"x") for i in range(1200) for q in "ab"])

    assert sorted(notices(feed)) == ["a", "b"]


def test_a_delayed_message_publishes_no_notice_since_nothing_is_ready_yet(
    broker: RedisBroker, feed: RedisWakeFeed
) -> None:
    following(feed, "orders")

    broker.enqueue("orders", "later", b"x", delay_s=60)

    assert notices(feed) == []


def test_only_the_followed_queues_are_noticed_and_unfollowing_stops_them(
    broker: RedisBroker, feed: RedisWakeFeed
) -> None:
    following(feed, "orders", "mail")

    broker.enqueue("other", "o1", b"x")
    broker.enqueue("mail", "m1", b"x")
    assert notices(feed) == ["mail"]

    feed.follow(["mail"])
    broker.enqueue("orders", "m2", b"x")
    assert notices(feed) == []


def test_the_notice_is_published_on_the_queue_wake_channel_with_the_queue_name(
    broker: RedisBroker, raw: redis.Redis
) -> None:
    # Given a plain subscriber on the channel QueueKeys names (the Lua side builds the same name)
    pubsub = raw.pubsub()
    channel = QueueKeys.of("orders").wake_channel
    pubsub.subscribe(channel)
    assert pubsub.get_message(timeout=WAIT_S)["type"] == "subscribe"

    broker.enqueue("orders", "m1", b"x")

    message = pubsub.get_message(timeout=WAIT_S)
    pubsub.close()
    assert channel == "tf:{orders}:wake"
    assert message is not None
    assert (message["channel"], message["data"]) == (channel.encode(), b"orders")


def test_a_feed_that_lost_its_server_raises_a_broker_error(redis_server: RedisServer, redis_url: str) -> None:
    feed = connect_wake_feed(redis_url, socket_timeout_s=1.0)
    assert feed is not None
    try:
        following(feed, "orders")
        redis_server.stop()
        with pytest.raises(BrokerError):
            receive_for(feed, 2.0)
    finally:
        feed.close()
        redis_server.start()
