"""How the supervisor takes in its children's events: at once after a quiet spell, then no more often than every
``EVENTS_EVERY_S``, so a stream of short tasks does not wake it twice per task; a child's death and a handed-over
broker socket wake it at any time. The children here are stand-ins: a real pipe for the events, a pipe that never
becomes readable as the process sentinel, and ``multiprocessing.connection.wait`` recorded."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from types import SimpleNamespace
from typing import Any

import pytest

from taskfleet import App
from taskfleet.brokers.base import Delivery
from taskfleet.worker import events
from taskfleet.worker import supervisor as supervisor_module
from taskfleet.worker.broker_sockets import BrokerSockets
from taskfleet.worker.child_record import ChildRecord
from taskfleet.worker.metrics import UnservedWorkerMetrics
from taskfleet.worker.progress import Progress
from taskfleet.worker.settings import WorkerSettings
from taskfleet.worker.supervisor import EVENTS_EVERY_S, Supervisor


@pytest.fixture
def sup(memory_app: App) -> Iterator[Supervisor]:
    supervisor = Supervisor(memory_app, WorkerSettings(queues=("tests",), concurrency=2), UnservedWorkerMetrics())
    yield supervisor
    supervisor.steering.close()


class Waits:
    """``wait`` as the supervisor calls it, recorded: what it watched (as kinds) and for how long."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[set[str], float]] = []
        self._real = supervisor_module.wait
        self.kinds: dict[object, str] = {}
        monkeypatch.setattr(supervisor_module, "wait", self._wait)

    def _wait(self, objects: list[Any], timeout: float) -> list[Any]:
        self.calls.append(({self.kinds.get(o, "?") for o in objects}, timeout))
        return self._real(objects, timeout)


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> Waits:
    return Waits(monkeypatch)


@pytest.fixture
def child_pipes(sup: Supervisor, waits: Waits) -> Iterator[list[Connection]]:
    """Two stand-in children recorded in ``sup``; yields the child ends of their event pipes."""
    ends: list[Connection] = []
    fds: list[int] = []
    for slot in (0, 1):
        ours, theirs = Pipe(duplex=True)
        sentinel, never_written = os.pipe()
        fds += [sentinel, never_written]
        sockets = BrokerSockets()
        now = time.monotonic()
        sup.children[slot] = ChildRecord(slot=slot, process=SimpleNamespace(sentinel=sentinel),  # type: ignore[arg-type]
                                         conn=ours, progress=Progress(), spawned=now, last_beat=now, sockets=sockets)
        waits.kinds.update({ours: "events", sentinel: "death", sockets.fileno(): "handover"})
        ends.append(theirs)
    yield ends
    for fd in fds:
        os.close(fd)
    for rec in sup.children.values():
        rec.conn.close()
        rec.sockets.close()


def fetched(seq: int) -> events.Fetched:
    return events.Fetched([(seq, "tests", f"m{seq}", 1)])


def test_after_a_quiet_spell_the_first_event_is_taken_in_at_once(
        sup: Supervisor, waits: Waits, child_pipes: list[Connection]) -> None:
    child_pipes[0].send(fetched(1))

    sup._wait_events()

    assert waits.calls[-1][0] == {"events", "death", "handover"}
    assert list(sup.children[0].held) == [1]


def test_events_sent_just_after_are_left_to_gather_for_the_interval_then_taken_in_from_every_child(
        sup: Supervisor, waits: Waits, child_pipes: list[Connection]) -> None:
    # Given events just taken in
    child_pipes[0].send(fetched(1))
    sup._wait_events()
    # When both children send more at once
    child_pipes[0].send(fetched(2))
    child_pipes[1].send(fetched(7))
    began = time.monotonic()
    sup._wait_events()

    # Then the supervisor waited out the interval watching deaths and hand-overs only, and took in both children's
    watched, timeout = waits.calls[-1]
    assert watched == {"death", "handover"}
    assert 0 < timeout <= EVENTS_EVERY_S
    assert time.monotonic() - began >= timeout * 0.9
    assert (list(sup.children[0].held), list(sup.children[1].held)) == ([1, 2], [7])


def test_while_events_gather_the_supervisor_still_watches_for_a_childs_death(
        sup: Supervisor, waits: Waits, child_pipes: list[Connection]) -> None:
    child_pipes[0].send(fetched(1))
    sup._wait_events()

    sup._wait_events()

    assert "death" in waits.calls[-1][0]


def test_with_nothing_sent_the_supervisor_sleeps_a_whole_tick_on_everything(
        sup: Supervisor, waits: Waits, child_pipes: list[Connection]) -> None:
    sup._wait_events()

    assert waits.calls[-1] == ({"events", "death", "handover"}, supervisor_module._LOOP_TICK_S)
    assert all(not rec.held for rec in sup.children.values())


def test_a_delivery_is_known_held_from_its_fetched_event_even_when_read_at_the_childs_death(
        sup: Supervisor, child_pipes: list[Connection]) -> None:
    # Given events just taken in, then a Fetched sent while the next ones gather
    child_pipes[1].send(fetched(1))
    sup._wait_events()
    child_pipes[1].send(fetched(2))

    # When the child's events are read as a dead child's are (first thing in its reaping)
    sup._drain_events(sup.children[1])

    # Then the supervisor knows both deliveries it held
    assert sup.children[1].held == {1: Delivery("tests", "m1", b"", 1), 2: Delivery("tests", "m2", b"", 1)}
