"""What the supervisor makes of a child that has exited: the reason it counts in ``taskfleet_child_restarts_total``,
and what becomes of each message the child held."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from taskfleet.brokers.base import Delivery
from taskfleet.errors import BrokerConnectionError
from taskfleet.worker.child_exit import exit_reason, give_back


def record(**fields: Any) -> Any:
    """The parts of a ``ChildRecord`` these functions read; ``fields`` override them."""
    base: dict[str, Any] = {
        "slot": 0, "process": SimpleNamespace(pid=4242, exitcode=0), "held": {}, "exit_reason": None,
        "killed_for": None, "terminating": None, "killed_in_drain": False,
        "progress": SimpleNamespace(finished=0, running=lambda: None),
        "sockets": SimpleNamespace(unread=lambda: b""),  # what its broker connection holds unread
    }
    return SimpleNamespace(**{**base, **fields})


@pytest.mark.parametrize(("fields", "draining", "reason"), [
    ({"exit_reason": "stopped"}, False, "stopped"),
    ({"exit_reason": "max_tasks"}, False, "max_tasks"),
    ({"exit_reason": "max_memory"}, False, "max_memory"),
    ({"killed_for": SimpleNamespace(seq=3)}, False, "time_limit"),
    ({"terminating": SimpleNamespace(seq=3, task_id="t", signal_sent=True)}, False, "revoked"),
    ({"terminating": SimpleNamespace(seq=3, task_id="t", signal_sent=False)}, False, "crashed"),
    ({"killed_in_drain": True, "process": SimpleNamespace(pid=1, exitcode=-9)}, True, "stopped"),
    ({"exit_reason": "stopped", "process": SimpleNamespace(pid=1, exitcode=1)}, False, "crashed"),
    ({"process": SimpleNamespace(pid=1, exitcode=-11)}, False, "crashed"),
])
def test_a_child_exit_is_counted_under_the_reason_it_ended(fields: dict[str, Any], draining: bool,
                                                           reason: str) -> None:
    assert exit_reason(record(**fields), draining=draining) == reason


class RecordingBroker:
    """What ``give_back`` asked of the broker, per call; ``fail`` makes every call raise. ``unread``: the deliveries
    it finds in the bytes a dead child left unread (the message ids, one per byte of ``b"unread"`` bytes)."""

    def __init__(self, *, fail: bool = False, unread: Sequence[str] = ()) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.fail = fail
        self.unread = list(unread)

    def unread_deliveries(self, data: bytes) -> list[Delivery]:
        return [Delivery("q", message_id, b"", 1) for message_id in self.unread] if data == b"unread" else []

    def _record(self, action: str, deliveries: Sequence[Delivery]) -> None:
        if self.fail:
            raise BrokerConnectionError("broker unreachable")
        self.calls.append((action, [d.message_id for d in deliveries]))

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        self._record("ack", deliveries)

    def nack(self, deliveries: Sequence[Delivery]) -> None:
        self._record("nack (counted)", deliveries)

    def release(self, deliveries: Sequence[Delivery]) -> None:
        self._record("release (uncounted)", deliveries)


def held(*ids: str) -> dict[int, Delivery]:
    return {seq: Delivery("q", message_id, b"", 1) for seq, message_id in enumerate(ids, start=1)}


def test_a_dead_childs_finished_messages_are_acked_its_running_one_counted_and_the_rest_released() -> None:
    broker = RecordingBroker()
    rec = record(held=held("done", "running", "waiting"), progress=SimpleNamespace(finished=1, running=lambda: 2))

    give_back(broker, rec)  # type: ignore[arg-type]

    assert broker.calls == [("ack", ["done"]), ("nack (counted)", ["running"]),
                            ("release (uncounted)", ["waiting"])]


def test_a_task_killed_past_its_hard_time_limit_is_acked_its_failure_being_stored() -> None:
    broker = RecordingBroker()
    rec = record(held=held("timed out", "waiting"), killed_for=SimpleNamespace(seq=1),
                 progress=SimpleNamespace(finished=0, running=lambda: 1))

    give_back(broker, rec)  # type: ignore[arg-type]

    assert broker.calls == [("ack", ["timed out"]), ("release (uncounted)", ["waiting"])]


def test_a_task_a_drain_had_to_kill_goes_back_uncounted() -> None:
    broker = RecordingBroker()
    rec = record(held=held("running"), killed_in_drain=True, progress=SimpleNamespace(finished=0, running=lambda: 1))

    give_back(broker, rec)  # type: ignore[arg-type]

    assert broker.calls == [("release (uncounted)", ["running"])]


def test_deliveries_a_dead_child_never_read_are_released_uncounted_with_its_unstarted_ones() -> None:
    # Given a child that died running one task, holding one more, with two more pushed to its connection unread
    # (one of them a second copy of the one it holds)
    broker = RecordingBroker(unread=["pushed", "waiting"])
    rec = record(held=held("running", "waiting"), progress=SimpleNamespace(finished=0, running=lambda: 1),
                 sockets=SimpleNamespace(unread=lambda: b"unread"))

    give_back(broker, rec)  # type: ignore[arg-type]

    assert broker.calls == [("nack (counted)", ["running"]), ("release (uncounted)", ["waiting", "pushed"])]


def test_a_child_that_held_nothing_asks_nothing_of_the_broker() -> None:
    broker = RecordingBroker(fail=True)

    give_back(broker, record())  # type: ignore[arg-type]


def test_an_unreachable_broker_leaves_the_messages_to_their_leases_and_the_supervisor_goes_on() -> None:
    rec = record(held=held("waiting"))

    give_back(RecordingBroker(fail=True), rec)  # type: ignore[arg-type]  # does not raise
