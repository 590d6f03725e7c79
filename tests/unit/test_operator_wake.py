"""The operator's wake listener (``taskfleet.operator.wake``) over a fake feed: which queues it follows, whom a notice
wakes, how notices coalesce, and what a lost connection costs. The real feed on a real Redis:
``tests/integration/test_redis_wake_feed.py``; the whole path through the operator:
``tests/e2e/test_operator_wake.py``."""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Collection, Iterator

import pytest

from taskfleet.brokers.wake_feed import WakeBatch, WakeFeed, connect_wake_feed, has_wake_feed
from taskfleet.errors import BrokerConnectionError
from taskfleet.operator.wake import WakeListener

URL = "redis://redis:6379/0"
OTHER_URL = "redis://other:6379/0"
WAIT_S = 2.0


class FakeFeed(WakeFeed):
    """A feed whose notices the test sends; confirms every newly followed queue, like Redis does."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.followed: frozenset[str] = frozenset()
        self.inbox: queue.Queue[WakeBatch | Exception] = queue.Queue()
        self.closed = False

    def follow(self, queues: Collection[str]) -> None:
        new = frozenset(queues) - self.followed
        self.followed = frozenset(queues)
        if new:
            self.inbox.put(WakeBatch(confirmed=new))

    def receive(self, timeout_s: float) -> WakeBatch:
        try:
            got = self.inbox.get(timeout=timeout_s)
        except queue.Empty:
            return WakeBatch()
        if isinstance(got, Exception):
            raise got
        return WakeBatch(noticed=got.noticed & self.followed, confirmed=got.confirmed & self.followed)

    def notice(self, *queues: str) -> None:
        self.inbox.put(WakeBatch(noticed=frozenset(queues)))

    def close(self) -> None:
        self.closed = True


class Feeds:
    """The connect function of a listener: every feed it opened, by URL."""

    def __init__(self) -> None:
        self.opened: dict[str, list[FakeFeed]] = {}

    def __call__(self, url: str) -> WakeFeed:
        feed = FakeFeed(url)
        self.opened.setdefault(url, []).append(feed)
        return feed

    def latest(self, url: str = URL) -> FakeFeed:
        wait_until(lambda: url in self.opened)
        return self.opened[url][-1]


class Wakes:
    """Counts the calls of one TaskQueue's wake."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self.times.append(time.monotonic())

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.times)


def wait_until(check: object, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


@pytest.fixture
def feeds() -> Feeds:
    return Feeds()


@pytest.fixture
def listener(feeds: Feeds) -> Iterator[WakeListener]:
    listener = WakeListener(connect=feeds, min_gap_s=0.3, receive_s=0.02, reconnect_s=0.05)
    yield listener
    listener.close()


def tracked_and_confirmed(listener: WakeListener, feeds: Feeds, wakes: Wakes, *queues: str,
                          key: tuple[str, str] = ("ns", "tq"), url: str = URL) -> FakeFeed:
    """``key`` tracked on ``queues``, past the one wake its subscription's confirmation gives, and its gap."""
    before = wakes.count
    listener.track(key, url, queues, wakes)
    feed = feeds.latest(url)
    wait_until(lambda: set(queues) <= feed.followed)
    wait_until(lambda: wakes.count == before + 1)
    time.sleep(0.35)  # past the coalescing gap
    return feed


def test_a_tracked_task_queue_is_woken_once_when_its_subscription_is_confirmed(
    listener: WakeListener, feeds: Feeds
) -> None:
    # A message enqueued between the poll that found the queue empty and the subscription notified nobody.
    wakes = Wakes()

    listener.track(("ns", "tq"), URL, ["orders"], wakes)

    wait_until(lambda: wakes.count == 1)
    assert feeds.latest().followed == {"orders"}


def test_a_notice_on_one_of_its_queues_wakes_the_task_queue(listener: WakeListener, feeds: Feeds) -> None:
    wakes = Wakes()
    feed = tracked_and_confirmed(listener, feeds, wakes, "orders", "mail")

    feed.notice("mail")

    wait_until(lambda: wakes.count == 2)


def test_a_notice_wakes_only_the_task_queues_that_follow_that_queue(listener: WakeListener, feeds: Feeds) -> None:
    orders, mail = Wakes(), Wakes()
    feed = tracked_and_confirmed(listener, feeds, orders, "orders", key=("ns", "orders"))
    tracked_and_confirmed(listener, feeds, mail, "mail", key=("ns", "mail"))

    feed.notice("orders")

    wait_until(lambda: orders.count == 2)
    time.sleep(0.05)
    assert mail.count == 1


def test_a_flood_of_notices_wakes_a_task_queue_at_most_once_per_gap(listener: WakeListener, feeds: Feeds) -> None:
    # Given a queue refilled many times a second while its TaskQueue is tracked
    wakes = Wakes()
    feed = tracked_and_confirmed(listener, feeds, wakes, "orders")
    start = wakes.count

    # When 100 notices arrive within about 0.5 s
    flood_started = time.monotonic()
    for _ in range(100):
        feed.notice("orders")
        time.sleep(0.005)
    flood_s = time.monotonic() - flood_started
    time.sleep(0.6)

    # Then the first wakes it at once and the rest coalesce into one wake per 0.3 s gap
    woken = wakes.times[start:]
    assert 2 <= len(woken) <= 2 + flood_s / 0.3
    assert all(b - a >= 0.29 for a, b in itertools.pairwise(woken))


def test_an_untracked_task_queue_is_not_woken_and_its_queues_are_no_longer_followed(
    listener: WakeListener, feeds: Feeds
) -> None:
    wakes = Wakes()
    feed = tracked_and_confirmed(listener, feeds, wakes, "orders")

    assert listener.untrack(("ns", "tq")) is True
    feed.notice("orders")
    time.sleep(0.1)

    assert wakes.count == 1
    assert listener.untrack(("ns", "tq")) is False
    assert listener.tracked() == {}


def test_one_feed_per_broker_url_follows_the_union_of_its_task_queues_queues(
    listener: WakeListener, feeds: Feeds
) -> None:
    a, b, c = Wakes(), Wakes(), Wakes()
    tracked_and_confirmed(listener, feeds, a, "orders", key=("ns", "a"))
    tracked_and_confirmed(listener, feeds, b, "mail", "orders", key=("ns", "b"))
    tracked_and_confirmed(listener, feeds, c, "orders", key=("ns", "c"), url=OTHER_URL)

    assert len(feeds.opened[URL]) == 1
    assert feeds.latest(URL).followed == {"orders", "mail"}
    assert feeds.latest(OTHER_URL).followed == {"orders"}

    listener.untrack(("ns", "b"))
    wait_until(lambda: feeds.latest(URL).followed == {"orders"})


def test_the_last_task_queue_of_a_url_leaving_closes_its_feed(listener: WakeListener, feeds: Feeds) -> None:
    wakes = Wakes()
    feed = tracked_and_confirmed(listener, feeds, wakes, "orders")

    listener.untrack(("ns", "tq"))

    wait_until(lambda: feed.closed)


def test_a_lost_connection_reconnects_and_wakes_each_tracked_task_queue_once(
    listener: WakeListener, feeds: Feeds
) -> None:
    # A notice sent while the follower was disconnected is lost: the new subscription's confirmation stands in.
    wakes = Wakes()
    feed = tracked_and_confirmed(listener, feeds, wakes, "orders")

    feed.inbox.put(BrokerConnectionError("redis wake feed redis://redis:6379/0 unreachable"))

    wait_until(lambda: len(feeds.opened[URL]) == 2)
    wait_until(lambda: wakes.count == 2)
    assert feed.closed
    assert feeds.latest().followed == {"orders"}


def test_an_unexpected_error_in_a_feed_reconnects_instead_of_ending_the_follower(
    listener: WakeListener, feeds: Feeds
) -> None:
    wakes = Wakes()
    feed = tracked_and_confirmed(listener, feeds, wakes, "orders")

    feed.inbox.put(RuntimeError("a bug"))

    wait_until(lambda: len(feeds.opened[URL]) == 2)
    wait_until(lambda: wakes.count == 2)


def test_a_wake_that_raises_does_not_stop_the_follower(listener: WakeListener, feeds: Feeds) -> None:
    def broken() -> None:
        raise RuntimeError("event loop closed")

    wakes = Wakes()
    listener.track(("ns", "broken"), URL, ["orders"], broken)
    tracked_and_confirmed(listener, feeds, wakes, "mail", key=("ns", "ok"))


def test_brokers_without_notices_are_not_followed(listener: WakeListener, feeds: Feeds) -> None:
    wakes = Wakes()

    for url in ("amqp://guest@rabbitmq//", "sqlite:////tmp/q.db", "memory://"):
        listener.track(("ns", url), url, ["orders"], wakes)

    assert listener.tracked() == {}
    assert feeds.opened == {}


def test_only_redis_has_a_wake_feed() -> None:
    assert has_wake_feed("redis://localhost:6379/0")
    assert has_wake_feed("rediss://localhost:6379/0")
    assert has_wake_feed("unix:///run/redis.sock")
    for url in ("amqp://guest@localhost//", "sqlite:///tmp/x.db", "memory://", "nope://x"):
        assert not has_wake_feed(url)
        assert connect_wake_feed(url, socket_timeout_s=1.0) is None


def test_a_wake_batch_asks_for_a_look_at_noticed_and_confirmed_queues() -> None:
    assert WakeBatch(noticed=frozenset({"a"}), confirmed=frozenset({"b"})).queues == {"a", "b"}
    assert WakeBatch().queues == frozenset()
