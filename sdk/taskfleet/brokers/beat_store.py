"""The beat store contract: what beat replicas share through the broker so each tick is sent exactly once.

- **A leader lease.** Every replica calls ``hold_lease()`` about three times per ``lease_s``; exactly one holds it.
  A leader that stops renewing (killed, frozen, cut off) loses it within ``lease_s`` and another replica takes over.
- **A cursor per entry**: the scheduled time (Unix ms) of the last tick that was sent or deliberately skipped. It
  lives in the broker, so a restarted or new leader carries on where the last one stopped.
- **A fenced, idempotent fire.** ``fire(tick)`` sends the tick's message only if this replica still leads, the tick
  is after the entry's cursor and no one has claimed it; claim, cursor and message are stored together. So a
  replica that still believes it leads after losing the lease (a split-brain moment) cannot send a tick twice.

Each broker package implements it beside its broker (``RedisBeatStore``, ``SQLiteBeatStore``, ``StubBeatStore``,
``RabbitMQBeatStore``); ``connect_beat_store`` picks one by the broker's URL scheme, from the table in
``taskfleet._connections.schemes``. How each one keeps these promises, and where it cannot: docs/beat.md.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

from taskfleet._connections import schemes
from taskfleet.brokers.base import Broker, Outgoing
from taskfleet.errors import ConfigurationError

__all__ = ["DEFAULT_CLAIM_TTL_S", "DEFAULT_LEASE_S", "BeatStore", "Tick", "connect_beat_store"]

#: How long a leader's lease lasts without renewal: the longest a dead leader's ticks wait for a takeover.
DEFAULT_LEASE_S = 15.0
#: How long a tick's claim is kept. It only has to outlive a split-brain moment (about one lease); the cursor
#: guards older ticks.
DEFAULT_CLAIM_TTL_S = 3600.0


@dataclass(frozen=True, slots=True)
class Tick:
    """One fire of one entry: its scheduled time (Unix milliseconds) and the message to enqueue (its id is
    derived from the entry name and the scheduled time, so a duplicate would be recognisable)."""

    entry: str
    scheduled_ms: int
    message: Outgoing


class BeatStore(ABC):
    """A beat replica's view of the shared schedule state. Not thread-safe: one beat loop uses it."""

    lease_s: float
    holder: str

    @classmethod
    @abstractmethod
    def for_broker(cls, broker: Broker, *, namespace: str, holder: str, lease_s: float, claim_ttl_s: float) -> Self:
        """A store on ``broker``'s server (what ``connect_beat_store`` calls). A store with a connection of its own
        opens it from ``broker.settings``; ``claim_ttl_s`` is ignored by stores whose claims need no expiry."""

    @abstractmethod
    def hold_lease(self) -> bool:
        """Take the leader lease if it is free, or renew it if this replica holds it. True while it leads."""

    @abstractmethod
    def release_lease(self) -> None:
        """Give the lease up now (on shutdown), so another replica takes over at once instead of after a lease."""

    @abstractmethod
    def cursors(self, entries: Sequence[str]) -> dict[str, int | None]:
        """The stored cursor (Unix ms) of each entry; None for an entry that has none yet."""

    @abstractmethod
    def start_cursor(self, entry: str, at_ms: int) -> int:
        """Store ``at_ms`` as ``entry``'s cursor unless it has one; return the cursor now stored."""

    @abstractmethod
    def fire(self, tick: Tick) -> bool:
        """Enqueue ``tick.message`` and move the entry's cursor to the tick, atomically and only when this replica
        leads, the tick is after the cursor and not claimed yet. False when it was not sent (already sent by
        someone, or not leading). Raises ``BrokerConnectionError`` when the broker cannot be reached."""

    @abstractmethod
    def skip(self, entry: str, scheduled_ms: int) -> None:
        """Move ``entry``'s cursor forward to ``scheduled_ms`` without sending (a missed tick the catch-up policy
        drops). Never moves a cursor back."""

    @abstractmethod
    def close(self) -> None:
        """Close connections (the lease is not released: call ``release_lease`` first for a clean handover)."""


def connect_beat_store(broker: Broker, *, namespace: str, holder: str, lease_s: float = DEFAULT_LEASE_S,
                       claim_ttl_s: float = DEFAULT_CLAIM_TTL_S) -> BeatStore:
    """A beat store on ``broker``'s server. ``namespace`` separates the beats of different apps on one broker;
    ``holder`` names this replica in the lease (unique per process)."""
    if lease_s < 1:
        raise ConfigurationError("the beat lease must be >= 1 second")
    if claim_ttl_s < lease_s:
        raise ConfigurationError("claim_ttl_s must be at least the lease")
    return schemes.connect_beat_store(broker, namespace=namespace, holder=holder, lease_s=lease_s,
                                      claim_ttl_s=claim_ttl_s)
