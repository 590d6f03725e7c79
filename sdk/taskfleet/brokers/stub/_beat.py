"""An in-process beat store for unit tests (``memory://``): replicas in one process share state by namespace."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Self

from taskfleet.brokers.base import Broker
from taskfleet.brokers.beat_store import BeatStore, Tick


@dataclass
class SharedBeatState:
    """What the replicas of one namespace share (in Redis this is three kinds of keys)."""

    leader: str | None = None
    leader_until: float = 0.0
    cursors: dict[str, int] = field(default_factory=dict)
    claims: set[tuple[str, int]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


_STATES: dict[str, SharedBeatState] = {}


def shared_state(namespace: str) -> SharedBeatState:
    """The state of ``namespace`` in this process (created on first use)."""
    return _STATES.setdefault(namespace, SharedBeatState())


def reset_beat_state() -> None:
    """Forget every namespace's state (between tests)."""
    _STATES.clear()


class StubBeatStore(BeatStore):
    """A ``BeatStore`` in memory; ``clock`` (seconds) decides lease expiry, so tests can move time."""

    @classmethod
    def for_broker(cls, broker: Broker, *, namespace: str, holder: str, lease_s: float, claim_ttl_s: float) -> Self:
        """A store in ``broker``'s process (``BeatStore.for_broker``; claims live as long as the process)."""
        return cls(broker, namespace=namespace, holder=holder, lease_s=lease_s)

    def __init__(self, broker: Broker, *, namespace: str, holder: str, lease_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.broker = broker
        self.holder = holder
        self.lease_s = lease_s
        self.state = shared_state(namespace)
        self._clock = clock

    def hold_lease(self) -> bool:
        with self.state.lock:
            now = self._clock()
            if self.state.leader in (None, self.holder) or now >= self.state.leader_until:
                self.state.leader, self.state.leader_until = self.holder, now + self.lease_s
            return self.state.leader == self.holder

    def release_lease(self) -> None:
        with self.state.lock:
            if self.state.leader == self.holder:
                self.state.leader = None

    def cursors(self, entries: Sequence[str]) -> dict[str, int | None]:
        with self.state.lock:
            return {entry: self.state.cursors.get(entry) for entry in entries}

    def start_cursor(self, entry: str, at_ms: int) -> int:
        with self.state.lock:
            return self.state.cursors.setdefault(entry, at_ms)

    def fire(self, tick: Tick) -> bool:
        with self.state.lock:
            if self.state.leader != self.holder or self._clock() >= self.state.leader_until:
                return False
            key = (tick.entry, tick.scheduled_ms)
            if key in self.state.claims or self.state.cursors.get(tick.entry, -1) >= tick.scheduled_ms:
                return False
            m = tick.message
            self.broker.enqueue(m.queue, m.message_id, m.data, priority=m.priority, delay_s=m.delay_s)
            self.state.claims.add(key)
            self.state.cursors[tick.entry] = tick.scheduled_ms
            return True

    def skip(self, entry: str, scheduled_ms: int) -> None:
        with self.state.lock:
            if self.state.leader == self.holder:
                self.state.cursors[entry] = max(self.state.cursors.get(entry, scheduled_ms), scheduled_ms)

    def close(self) -> None:
        """Nothing to close."""
