"""An in-process fleet store for unit tests (``memory://``): the stores of one URL and namespace in one process share
their state, as clients of one server do (a bare ``memory://`` is one URL like any other).

Expiry is judged by ``clock`` (Unix seconds, ``time.time`` by default), so tests can move time. Blocking calls wait
on one condition per shared state, woken by every write.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Self

from taskfleet.brokers.base import Broker
from taskfleet.brokers.event_entries import row_cursor
from taskfleet.brokers.fleet_store import ControlListener, FleetStore, ReplyInbox
from taskfleet.errors import ControlError
from taskfleet.fleet.revocations import Revocation


@dataclass
class SharedFleetState:
    """What the stores of one URL and namespace share (in Redis: keys, a channel, lists and a stream)."""

    workers: dict[str, tuple[float, bytes]] = field(default_factory=dict)  # id -> (expires at, record)
    revocations: dict[str, Revocation] = field(default_factory=dict)
    listeners: set[_StubListener] = field(default_factory=set)
    inboxes: dict[str, deque[bytes]] = field(default_factory=dict)
    events: deque[tuple[int, bytes]] = field(default_factory=deque)  # (sequence number, event), oldest first
    seq: int = 0
    cond: threading.Condition = field(default_factory=threading.Condition)


_STATES: dict[tuple[str, str], SharedFleetState] = {}
_STATES_LOCK = threading.Lock()


def shared_fleet_state(url: str, namespace: str) -> SharedFleetState:
    """The state of ``namespace`` on ``url`` in this process (created on first use)."""
    with _STATES_LOCK:
        return _STATES.setdefault((url, namespace), SharedFleetState())


def reset_fleet_state() -> None:
    """Forget every namespace's fleet state (between tests)."""
    with _STATES_LOCK:
        _STATES.clear()


def _wait(cond: threading.Condition, ready: Callable[[], bool], timeout_s: float) -> None:
    """Wait (holding ``cond``) until ``ready()`` or ``timeout_s`` seconds have passed."""
    deadline = time.monotonic() + max(0.0, timeout_s)
    while not ready() and (remaining := deadline - time.monotonic()) > 0:
        cond.wait(remaining)


class _StubListener(ControlListener):
    def __init__(self, state: SharedFleetState, worker_id: str) -> None:
        self.worker_id = worker_id
        self.pending: deque[bytes] = deque()
        self._state = state
        with state.cond:
            state.listeners.add(self)

    def receive(self, timeout_s: float) -> list[bytes]:
        with self._state.cond:
            _wait(self._state.cond, lambda: bool(self.pending), timeout_s)
            out = list(self.pending)
            self.pending.clear()
            return out

    def close(self) -> None:
        with self._state.cond:
            self._state.listeners.discard(self)


class _StubInbox(ReplyInbox):
    def __init__(self, state: SharedFleetState) -> None:
        self.address = uuid.uuid4().hex
        self._state = state
        with state.cond:
            state.inboxes[self.address] = deque()

    def collect(self, timeout_s: float, *, expected: int | None = None) -> list[bytes]:
        state = self._state
        with state.cond:
            replies = state.inboxes.get(self.address)
            if replies is None:
                raise ControlError("collect on a closed reply inbox")
            if expected is None:
                _wait(state.cond, lambda: False, timeout_s)
            else:
                _wait(state.cond, lambda: len(replies) >= expected, timeout_s)
            out = list(replies)
            replies.clear()
            return out

    def close(self) -> None:
        with self._state.cond:
            self._state.inboxes.pop(self.address, None)


class StubFleetStore(FleetStore):
    """A ``FleetStore`` in this process's memory, shared by URL and namespace (module docstring)."""

    @classmethod
    def for_broker(cls, broker: Broker, *, namespace: str, events_max_len: int) -> Self:
        """A store of ``broker``'s URL (``FleetStore.for_broker``)."""
        return cls(broker.settings.url, namespace=namespace, events_max_len=events_max_len)

    def __init__(self, url: str, *, namespace: str, events_max_len: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.namespace = namespace
        self.events_max_len = events_max_len
        self.state = shared_fleet_state(url, namespace)
        self._clock = clock

    # -- registry --------------------------------------------------------------------------------------------------

    def heartbeat(self, worker_id: str, record: bytes, *, ttl_s: float) -> None:
        with self.state.cond:
            self.state.workers[worker_id] = (self._clock() + ttl_s, bytes(record))

    def forget_worker(self, worker_id: str) -> None:
        with self.state.cond:
            self.state.workers.pop(worker_id, None)

    def workers(self) -> list[bytes]:
        with self.state.cond:
            now = self._clock()
            for gone in [key for key, (expires, _) in self.state.workers.items() if expires <= now]:
                del self.state.workers[gone]
            return [record for _, record in self.state.workers.values()]

    # -- revocations -----------------------------------------------------------------------------------------------

    def add_revocations(self, revocations: Sequence[Revocation]) -> None:
        with self.state.cond:
            self.state.revocations.update((revocation.task_id, revocation) for revocation in revocations)

    def revocations(self) -> list[Revocation]:
        with self.state.cond:
            now = self._clock()
            for gone in [key for key, r in self.state.revocations.items() if r.expires_at <= now]:
                del self.state.revocations[gone]
            return list(self.state.revocations.values())

    # -- control ---------------------------------------------------------------------------------------------------

    def publish_control(self, request: bytes) -> None:
        with self.state.cond:
            for listener in self.state.listeners:
                listener.pending.append(bytes(request))
            self.state.cond.notify_all()

    def control_listener(self, worker_id: str) -> ControlListener:
        return _StubListener(self.state, worker_id)

    def reply_inbox(self) -> ReplyInbox:
        return _StubInbox(self.state)

    def reply(self, address: str, reply: bytes) -> None:
        with self.state.cond:
            inbox = self.state.inboxes.get(address)
            if inbox is not None:
                inbox.append(bytes(reply))
                self.state.cond.notify_all()

    # -- events ----------------------------------------------------------------------------------------------------

    def emit_events(self, events: Sequence[bytes]) -> None:
        if not events:
            return
        with self.state.cond:
            stream = self.state.events
            for event in events:
                self.state.seq += 1
                stream.append((self.state.seq, bytes(event)))
            while len(stream) > self.events_max_len:
                stream.popleft()
            self.state.cond.notify_all()

    def read_events(self, cursor: str | None, *, limit: int = 1000, timeout_s: float = 0.0) -> tuple[list[bytes], str]:
        after = row_cursor(cursor)
        with self.state.cond:
            stream = self.state.events
            _wait(self.state.cond, lambda: bool(stream) and stream[-1][0] > after, timeout_s)
            page = [(seq, event) for seq, event in stream if seq > after][:max(0, limit)]
        if not page:
            return [], str(after)
        return [event for _, event in page], str(page[-1][0])

    def events_end(self) -> str:
        with self.state.cond:
            return str(self.state.seq)

    def close(self) -> None:
        """Nothing to close."""
