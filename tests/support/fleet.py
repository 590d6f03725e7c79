"""Doubles for the worker's fleet threads' unit specifications: a fleet store whose broker can be made to fail, and a
supervisor whose children are fakes (no process is forked)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from taskfleet import App
from taskfleet.brokers.base import Broker, Delivery
from taskfleet.brokers.fleet_store import ControlListener, FleetStore, ReplyInbox
from taskfleet.errors import BrokerConnectionError
from taskfleet.fleet.revocations import Revocation
from taskfleet.worker.metrics import UnservedWorkerMetrics
from taskfleet.worker.progress import Progress
from taskfleet.worker.settings import WorkerSettings
from taskfleet.worker.supervisor import ChildRecord, Supervisor


@dataclass
class FakeServer:
    """What every store connected to it shares, as clients of one broker server do. ``fail_next`` makes that many
    of the next calls raise ``BrokerConnectionError``."""

    records: dict[str, tuple[bytes, float]] = field(default_factory=dict)  # worker id -> (record, ttl_s)
    forgotten: list[str] = field(default_factory=list)
    replies: list[tuple[str, bytes]] = field(default_factory=list)
    listeners: list[FakeListener] = field(default_factory=list)
    connects: int = 0
    closed_stores: int = 0
    fail_next: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def connect(self) -> FakeStore:
        self.check()
        self.connects += 1
        return FakeStore(self)

    def check(self) -> None:
        with self.lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                raise BrokerConnectionError("the broker is down (fake)")

    def publish(self, request: bytes) -> None:
        for listener in list(self.listeners):
            if not listener.closed:
                listener.inbox.put(request)


class FakeListener(ControlListener):
    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.inbox: queue.Queue[bytes] = queue.Queue()
        self.closed = False

    def receive(self, timeout_s: float) -> list[bytes]:
        self.server.check()
        try:
            first = self.inbox.get(timeout=timeout_s)
        except queue.Empty:
            return []
        out = [first]
        while not self.inbox.empty():
            out.append(self.inbox.get_nowait())
        return out

    def close(self) -> None:
        self.closed = True


class FakeStore(FleetStore):
    """The registry and control parts of the contract, on a ``FakeServer``."""

    namespace = "fake"
    events_max_len = 10

    def __init__(self, server: FakeServer) -> None:
        self.server = server

    @classmethod
    def for_broker(cls, broker: Broker, *, namespace: str, events_max_len: int) -> Self:
        raise NotImplementedError

    def heartbeat(self, worker_id: str, record: bytes, *, ttl_s: float) -> None:
        self.server.check()
        self.server.records[worker_id] = (record, ttl_s)

    def forget_worker(self, worker_id: str) -> None:
        self.server.check()
        self.server.records.pop(worker_id, None)
        self.server.forgotten.append(worker_id)

    def workers(self) -> list[bytes]:
        return [record for record, _ in self.server.records.values()]

    def add_revocations(self, revocations: Sequence[Revocation]) -> None:
        raise NotImplementedError

    def revocations(self) -> list[Revocation]:
        raise NotImplementedError

    def publish_control(self, request: bytes) -> None:
        self.server.publish(request)

    def control_listener(self, worker_id: str) -> ControlListener:
        self.server.check()
        listener = FakeListener(self.server)
        self.server.listeners.append(listener)
        return listener

    def reply_inbox(self) -> ReplyInbox:
        raise NotImplementedError

    def reply(self, address: str, reply: bytes) -> None:
        self.server.check()
        self.server.replies.append((address, reply))

    def emit_events(self, events: Sequence[bytes]) -> None:
        raise NotImplementedError

    def read_events(self, cursor: str | None, *, limit: int = 1000, timeout_s: float = 0.0) -> tuple[list[bytes], str]:
        raise NotImplementedError

    def events_end(self) -> str:
        raise NotImplementedError

    def close(self) -> None:
        self.server.closed_stores += 1


@dataclass
class FakeProcess:
    pid: int | None


def fake_supervisor(app: App, *, concurrency: int = 2, queues: tuple[str, ...] = ("tests",),
                    **settings: Any) -> Supervisor:
    """A supervisor that has forked nothing (add children with ``add_child``)."""
    return Supervisor(app, WorkerSettings(queues=queues, concurrency=concurrency, **settings),
                      UnservedWorkerMetrics())


def add_child(supervisor: Supervisor, slot: int, pid: int, *, held: Sequence[Delivery] = ()) -> ChildRecord:
    """A child in ``slot`` holding ``held`` (sequence numbers 1, 2, ... in order), running nothing yet."""
    rec = ChildRecord(slot=slot, process=FakeProcess(pid), conn=None, progress=Progress(),  # type: ignore[arg-type]
                      spawned=0.0, last_beat=0.0, sockets=None)  # type: ignore[arg-type]
    rec.held = {seq: delivery for seq, delivery in enumerate(held, start=1)}
    supervisor.children[slot] = rec
    return rec


def run_task(rec: ChildRecord, seq: int, task_id: str, task: str, since: float) -> None:
    """Make ``rec``'s child run delivery ``seq`` as ``task`` (what the child writes in ``Progress``)."""
    rec.progress.start(seq)
    rec.progress.describe(seq, task_id, task, since)


def finish_task(rec: ChildRecord, seq: int) -> None:
    rec.progress.finish(seq)
