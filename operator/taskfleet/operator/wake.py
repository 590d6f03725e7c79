"""Wake-up from zero: the autoscaler polls a TaskQueue at once when its broker says one of its queues went from
empty to non-empty, instead of waiting out ``pollIntervalSeconds``.

The autoscaler ``track``s a TaskQueue after a poll that left it at zero replicas and ``untrack``s it otherwise, so
only idle TaskQueues are followed (a busy queue's enqueues cost the operator nothing). One follower thread per
broker URL holds one ``WakeFeed`` (``taskfleet.brokers.wake_feed``; Redis only, other brokers keep the poll) for the
union of the tracked TaskQueues' queues, and calls a TaskQueue's ``wake`` on a notice. The poll stays the source of
truth: a lost notice costs one poll interval, nothing more.

- A queue whose following the server has just confirmed also wakes its TaskQueues once: a message enqueued between
  the poll that found the queue empty and the subscription sent its notice to nobody.
- Coalescing: a TaskQueue is woken at most once per ``min_gap_s`` seconds; notices within the gap make one wake at
  its end, so a flood of notices (a queue emptied and refilled many times a second) is at most one extra poll per
  gap, never a poll storm.
- A lost connection is logged, and the follower reconnects after ``RECONNECT_S``; the confirmations of the new
  subscriptions wake every tracked TaskQueue of that broker once (a notice sent meanwhile was lost).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from taskfleet.brokers.wake_feed import WakeFeed, connect_wake_feed, has_wake_feed
from taskfleet.errors import TaskfleetError
from taskfleet.urls import mask_secrets, mask_url
from taskfleet.worker.logging import get_logger

_log = get_logger("taskfleet.operator")

#: A TaskQueue is woken at most once per this many seconds (the notices of one gap coalesce into one wake).
WAKE_MIN_GAP_S = 1.0
#: Longest wait for notices before a follower looks at its tracked queues and pending wakes again.
RECEIVE_S = 0.25
#: Seconds between attempts to reconnect a follower whose broker was unreachable.
RECONNECT_S = 2.0
#: Socket timeout of a follower's connection.
FEED_TIMEOUT_S = 3.0

Key = tuple[str, str]
Wake = Callable[[], None]
ConnectFeed = Callable[[str], WakeFeed | None]


@dataclass(frozen=True, slots=True)
class _Tracked:
    url: str
    queues: frozenset[str]
    wake: Wake


def _connect(url: str) -> WakeFeed | None:
    return connect_wake_feed(url, socket_timeout_s=FEED_TIMEOUT_S)


class WakeListener:
    """Follows the queues of TaskQueues at zero replicas and wakes their polling loops. Thread-safe."""

    def __init__(self, *, connect: ConnectFeed = _connect, min_gap_s: float = WAKE_MIN_GAP_S,
                 receive_s: float = RECEIVE_S, reconnect_s: float = RECONNECT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._connect = connect
        self._min_gap_s = min_gap_s
        self._receive_s = receive_s
        self._reconnect_s = reconnect_s
        self._clock = clock
        self._lock = threading.Lock()
        self._tracked: dict[Key, _Tracked] = {}
        self._followers: dict[str, _Follower] = {}
        #: When each TaskQueue was last woken, and the wakes held back to the end of their gap (due time).
        self._last_woken: dict[Key, float] = {}
        self._pending: dict[Key, float] = {}

    def track(self, key: Key, url: str, queues: Collection[str], wake: Wake) -> None:
        """Wake ``key`` (``wake``, called from a follower thread) when one of ``queues`` at ``url`` gets its first
        message. A broker without notices is ignored (its TaskQueues keep the poll)."""
        if not has_wake_feed(url):
            self.untrack(key)
            return
        tracked = _Tracked(url, frozenset(queues), wake)
        with self._lock:
            previous = self._tracked.get(key)
            if previous == tracked:
                return
            self._tracked[key] = tracked
            follower = self._followers.get(url)
            if follower is None:
                follower = self._followers[url] = _Follower(self, url)
                follower.start()
            else:
                follower.changed.set()
            if previous is not None and previous.url != url:
                self._changed(previous.url)

    def untrack(self, key: Key) -> bool:
        """Stop waking ``key`` (it has replicas again, or it is gone). True when it was tracked."""
        with self._lock:
            previous = self._tracked.pop(key, None)
            self._pending.pop(key, None)
            self._last_woken.pop(key, None)
            if previous is not None:
                self._changed(previous.url)
        return previous is not None

    def tracked(self) -> dict[Key, frozenset[str]]:
        """Every tracked TaskQueue and its queues (for tests and debugging)."""
        with self._lock:
            return {key: tracked.queues for key, tracked in self._tracked.items()}

    def close(self) -> None:
        """Stop every follower and wait for its thread."""
        with self._lock:
            followers, self._followers = list(self._followers.values()), {}
            self._tracked.clear()
        for follower in followers:
            follower.stop()
        for follower in followers:
            follower.join()

    # -- called by the followers --------------------------------------------------------------------------------

    def _changed(self, url: str) -> None:
        """(Lock held.) The tracked set of ``url`` changed: its follower re-follows, or stops when none is left."""
        follower = self._followers.get(url)
        if follower is None:
            return
        if any(tracked.url == url for tracked in self._tracked.values()):
            follower.changed.set()
        else:
            del self._followers[url]
            follower.stop()

    def _queues_of(self, url: str) -> frozenset[str]:
        with self._lock:
            return frozenset(q for tracked in self._tracked.values() if tracked.url == url for q in tracked.queues)

    def _noticed(self, url: str, queues: Collection[str]) -> None:
        """Wake every TaskQueue of ``url`` following one of ``queues``, coalesced to one wake per gap."""
        now = self._clock()
        to_wake: list[Wake] = []
        with self._lock:
            for key, tracked in self._tracked.items():
                if tracked.url != url or tracked.queues.isdisjoint(queues) or key in self._pending:
                    continue
                last = self._last_woken.get(key)
                if last is not None and now - last < self._min_gap_s:
                    self._pending[key] = last + self._min_gap_s
                else:
                    self._last_woken[key] = now
                    to_wake.append(tracked.wake)
        _call_all(to_wake)

    def _due(self, url: str) -> float | None:
        """Wake the held-back TaskQueues of ``url`` whose gap is over; returns seconds until the next one is due."""
        now = self._clock()
        to_wake: list[Wake] = []
        next_due: float | None = None
        with self._lock:
            for key, due in list(self._pending.items()):
                tracked = self._tracked.get(key)
                if tracked is None or tracked.url != url:
                    continue
                if due <= now:
                    del self._pending[key]
                    self._last_woken[key] = now
                    to_wake.append(tracked.wake)
                else:
                    next_due = due - now if next_due is None else min(next_due, due - now)
        _call_all(to_wake)
        return next_due


class _Follower(threading.Thread):
    """One broker URL's feed, on its own thread (a feed is not thread-safe)."""

    def __init__(self, listener: WakeListener, url: str) -> None:
        super().__init__(name=f"wake {mask_url(url)}", daemon=True)
        self.listener = listener
        self.url = url
        self.changed = threading.Event()
        self._quit = threading.Event()

    def stop(self) -> None:
        self._quit.set()

    def run(self) -> None:
        feed: WakeFeed | None = None
        while not self._quit.is_set():
            try:
                if feed is None:
                    feed = self.listener._connect(self.url)
                    if feed is None:  # a broker without notices: nothing to follow
                        return
                    self.changed.set()
                if self.changed.is_set():
                    self.changed.clear()
                    feed.follow(self.listener._queues_of(self.url))
                next_due = self.listener._due(self.url)
                timeout = self.listener._receive_s if next_due is None else min(next_due, self.listener._receive_s)
                batch = feed.receive(max(0.0, timeout))
                if batch.queues:
                    self.listener._noticed(self.url, batch.queues)
            except TaskfleetError as exc:  # BrokerError, or a queue name QueueKeys refuses
                _log.warning("wake_feed_lost", broker=mask_url(self.url), error=mask_secrets(str(exc)),
                             retry_in_s=self.listener._reconnect_s)
            except Exception:  # noqa: BLE001 - a bug here must cost the wake-ups, never the follower thread
                _log.exception("wake_feed_failed", broker=mask_url(self.url), retry_in_s=self.listener._reconnect_s)
            else:
                continue
            if feed is not None:
                feed.close()
            feed = None
            self._quit.wait(self.listener._reconnect_s)
        if feed is not None:
            feed.close()


def _call_all(wakes: list[Wake]) -> None:
    for wake in wakes:
        try:
            wake()
        except Exception:  # noqa: BLE001 - a TaskQueue whose loop is gone must not end the follower
            _log.exception("wake_failed")
