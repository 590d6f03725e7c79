"""Wake notices: a broker that can tell, the moment it happens, that a queue went from empty to non-empty.

The operator polls queue depth every ``pollIntervalSeconds``; a TaskQueue held at zero replicas would otherwise wait
up to a whole interval before the first message of a burst is seen. A ``WakeFeed`` lets it poll at once instead. A
notice is a hint, never a count: the poll stays the source of truth, and a lost notice only costs the interval.

Only Redis sends notices (``enqueue.lua`` publishes on the queue's wake channel). RabbitMQ and SQLite have no feed
(``connect_wake_feed`` returns None) and keep the poll; a broker adds one by implementing ``WakeFeed`` and naming it
in ``_FEEDS``.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Collection
from dataclasses import dataclass

from taskfleet._connections import schemes
from taskfleet.errors import ConfigurationError

#: ``module:Class`` of the feed of each broker kind that has one (loaded on first use, as ``schemes`` does).
_FEEDS: dict[str, str] = {"redis": "taskfleet.brokers.redis:RedisWakeFeed"}


@dataclass(frozen=True, slots=True)
class WakeBatch:
    """What a feed received in one ``receive``."""

    #: Queues that went from empty to non-empty.
    noticed: frozenset[str] = frozenset()
    #: Queues whose following the server has just confirmed (after ``follow`` or a reconnection): a message that
    #: arrived before the confirmation sent its notice to nobody, so the caller should look once.
    confirmed: frozenset[str] = frozenset()

    @property
    def queues(self) -> frozenset[str]:
        """Every queue worth a look: noticed or just confirmed."""
        return self.noticed | self.confirmed


class WakeFeed(ABC):
    """Wake notices of one broker. Not thread-safe: one thread calls ``follow`` and ``receive``."""

    @abstractmethod
    def follow(self, queues: Collection[str]) -> None:
        """Receive notices of exactly ``queues`` from now on (confirmed later, through ``WakeBatch.confirmed``).
        Raises ``BrokerError`` when the broker cannot be reached."""

    @abstractmethod
    def receive(self, timeout_s: float) -> WakeBatch:
        """What arrived, waiting up to ``timeout_s`` seconds for the first of it. Raises ``BrokerError`` when the
        connection is lost (close this feed and open a new one)."""

    @abstractmethod
    def close(self) -> None:
        """Stop following; never raises."""


def has_wake_feed(url: str) -> bool:
    """Whether the broker at ``url`` sends wake notices. Nothing is imported or connected."""
    try:
        return schemes.kind_of(url, "broker").name in _FEEDS
    except ConfigurationError:
        return False


def connect_wake_feed(url: str, *, socket_timeout_s: float) -> WakeFeed | None:
    """A new feed of the broker at ``url``, or None when that broker sends no notices (poll only). A malformed URL
    is a ``BrokerError``; connecting happens on the first ``follow``."""
    if not has_wake_feed(url):
        return None
    module, _, name = _FEEDS[schemes.kind_of(url, "broker").name].partition(":")
    feed_class: type[WakeFeed] = getattr(importlib.import_module(module), name)
    return feed_class(url, socket_timeout_s=socket_timeout_s)  # type: ignore[call-arg]
