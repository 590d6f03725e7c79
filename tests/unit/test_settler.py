"""Specification of how a worker child settles its live messages (taskfleet.worker.settler.Settler): the executor's
decisions carried out, acks batched, prefetched deliveries given back, leases renewed, a timed-out delivery acked
on the supervisor's command, and each reported to the supervisor with typed events (taskfleet.worker.events)."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from taskfleet.brokers.base import Delivery
from taskfleet.errors import BrokerConnectionError
from taskfleet.settings import BrokerSettings
from taskfleet.worker import events
from taskfleet.worker.child import Child
from taskfleet.worker.executor import ACK, ACK_NOW, DeadLetter, Decision, Leave, Outcome
from taskfleet.worker.holdings import Held, Holdings, Lease, lease_clock
from taskfleet.worker.settings import WorkerSettings
from taskfleet.worker.settler import Settler
from tests import tasks


class RecordingBroker:
    """The settling calls a Settler makes, in order; ``failing`` names the calls that raise a broker error."""

    def __init__(self, *failing: str) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.failing = set(failing)
        self.lost: set[str] = set()  # message ids whose leases ``extend`` reports lost
        self.settings = BrokerSettings(url="memory://", visibility_timeout_s=30.0)

    def _record(self, name: str, arg: Any) -> None:
        self.calls.append((name, arg))
        if name in self.failing:
            raise BrokerConnectionError(f"{name} failed")

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        self._record("ack", _ids(deliveries))

    def release(self, deliveries: Sequence[Delivery]) -> None:
        self._record("release", _ids(deliveries))

    def extend(self, deliveries: Sequence[Delivery]) -> list[Delivery]:
        self._record("extend", sorted(_ids(deliveries)))
        return [d for d in deliveries if d.message_id not in self.lost]

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        self._record("dead_letter", (delivery.message_id, reason))


class RecordingReporter:
    def __init__(self) -> None:
        self.sent: list[events.Event] = []

    def send(self, event: events.Event) -> None:
        self.sent.append(event)


def _ids(deliveries: Sequence[Delivery]) -> list[str]:
    return [d.message_id for d in deliveries]


def _held(seq: int) -> Held:
    return Held(seq, Delivery("q", f"m{seq}", b""))


def _outcome(decision: Decision, outcome: str = "success") -> Outcome:
    return Outcome(decision, outcome, "t", 0.5)


def _settler(*failing: str) -> tuple[Settler, RecordingBroker, RecordingReporter]:
    broker, reporter = RecordingBroker(*failing), RecordingReporter()
    return Settler(broker, reporter), broker, reporter  # type: ignore[arg-type]


# -- carrying out decisions --------------------------------------------------------------------------------------


def test_acks_wait_for_the_flush_then_go_out_in_one_call_with_one_done_event() -> None:
    settler, broker, reporter = _settler()

    assert settler.settle(_held(1), _outcome(ACK))
    assert settler.settle(_held(2), _outcome(ACK, "failure"))
    assert (broker.calls, reporter.sent) == ([], []), "nothing is sent per message"

    settler.flush()

    assert broker.calls == [("ack", ["m1", "m2"])]
    assert reporter.sent == [events.Done([1, 2], [("t", "q", "success", 0.5), ("t", "q", "failure", 0.5)])]
    settler.flush()
    assert len(broker.calls) == len(reporter.sent) == 1, "a flush with nothing pending sends nothing"


def test_a_retried_delivery_is_acked_at_once_and_reported_with_the_next_batch() -> None:
    settler, broker, reporter = _settler()

    assert settler.settle(_held(1), _outcome(ACK_NOW, "retry"))

    assert (broker.calls, reporter.sent) == ([("ack", ["m1"])], [])
    settler.flush()
    assert broker.calls == [("ack", ["m1"])], "not acked twice"
    assert reporter.sent == [events.Done([1], [("t", "q", "retry", 0.5)])]


def test_a_dead_lettered_delivery_is_moved_at_once_with_its_reason_and_never_acked() -> None:
    settler, broker, reporter = _settler()

    assert settler.settle(_held(1), _outcome(DeadLetter("malformed"), "dead_lettered"))
    settler.flush()

    assert broker.calls == [("dead_letter", ("m1", "malformed"))]
    assert reporter.sent == [events.Done([1], [("t", "q", "dead_lettered", 0.5)])]


def test_a_delivery_left_for_redelivery_is_reported_dropped_at_once_and_not_settled() -> None:
    settler, broker, reporter = _settler()

    assert not settler.settle(_held(1), _outcome(Leave("backend down"), "dropped"))

    assert (broker.calls, reporter.sent) == ([], [events.Dropped([1])])
    settler.flush()
    assert (broker.calls, reporter.sent) == ([], [events.Dropped([1])])


@pytest.mark.parametrize(
    ("decision", "failing"),
    [pytest.param(ACK_NOW, "ack", id="retry ack"), pytest.param(DeadLetter("bad"), "dead_letter", id="dead")],
)
def test_a_failed_immediate_settlement_leaves_the_delivery_for_redelivery(decision: Decision, failing: str) -> None:
    settler, _, reporter = _settler(failing)

    assert not settler.settle(_held(1), _outcome(decision))

    settler.flush()
    assert reporter.sent == [events.Dropped([1])], "not counted as settled"


def test_a_failed_batch_ack_is_still_reported_done() -> None:
    # Their outcomes are stored: delivered again, they are recognised and acked without running
    settler, broker, reporter = _settler("ack")
    settler.settle(_held(1), _outcome(ACK))

    settler.flush()

    assert broker.calls == [("ack", ["m1"])]
    assert reporter.sent == [events.Done([1], [("t", "q", "success", 0.5)])]
    assert settler.unacked() == []


# -- timing and leases -------------------------------------------------------------------------------------------


def test_settlements_are_overdue_once_the_oldest_finished_that_long_ago() -> None:
    settler, _, _ = _settler()
    assert not settler.overdue(0.0), "nothing finished yet"
    settler.settle(_held(1), _outcome(ACK))

    assert not settler.overdue(3600)
    time.sleep(0.01)
    assert settler.overdue(0.005)
    settler.flush()
    assert not settler.overdue(0.0)


def test_an_immediately_settled_delivery_makes_the_batch_report_overdue_too() -> None:
    settler, _, _ = _settler()
    settler.settle(_held(1), _outcome(DeadLetter("bad")))

    assert settler.overdue(0.0)


def test_leases_are_renewed_for_everything_held_and_every_pending_ack() -> None:
    settler, broker, _ = _settler()
    holdings = Holdings()
    holdings.add([Delivery("q", "m2", b""), Delivery("q", "m3", b"")])
    holdings.start_next()
    settler.settle(_held(1), _outcome(ACK))

    assert [d.message_id for d in settler.unacked()] == ["m1"]
    settler.renew_leases(holdings)

    assert broker.calls == [("extend", ["m1", "m2", "m3"])]


def test_nothing_held_renews_nothing() -> None:
    settler, broker, _ = _settler()

    settler.renew_leases(Holdings())

    assert broker.calls == []


def test_a_failed_lease_renewal_raises_for_the_caller_to_log() -> None:
    settler, _, _ = _settler("extend")
    holdings = Holdings()
    holdings.add([Delivery("q", "m1", b"")])

    with pytest.raises(BrokerConnectionError):
        settler.renew_leases(holdings)


def test_a_renewal_confirms_the_leases_still_held_and_returns_the_lost_ones() -> None:
    settler, broker, reporter = _settler()
    holdings = Holdings()
    a, b = holdings.add([Delivery("q", "a", b""), Delivery("q", "b", b"")])
    broker.lost = {"b"}

    lost = settler.renew_leases(holdings)

    now = lease_clock()
    assert lost == [b]
    assert [holdings.lease(h.seq, now, 30.0) for h in (a, b)] == [Lease.CERTAIN, Lease.LOST]
    assert reporter.sent == [], "found lost, not dropped yet: the child drops it when it comes to start it"


def test_a_failed_renewal_makes_every_lease_uncertain_and_raises() -> None:
    settler, _, _ = _settler("extend")
    holdings = Holdings()
    [a] = holdings.add([Delivery("q", "a", b"")], confirmed_at=lease_clock())

    with pytest.raises(BrokerConnectionError):
        settler.renew_leases(holdings)

    assert holdings.lease(a.seq, lease_clock(), 30.0) is Lease.UNCERTAIN


@pytest.mark.parametrize("lost", [pytest.param(True, id="lost"), pytest.param(False, id="not confirmed")])
def test_a_delivery_dropped_unrun_is_reported_dropped_without_any_broker_call(lost: bool) -> None:
    settler, broker, reporter = _settler()

    settler.drop_unrun(_held(1), lost=lost, error=None if lost else "down")
    settler.flush()

    assert (broker.calls, reporter.sent) == ([], [events.Dropped([1])])


def _child_before_start(broker: RecordingBroker, *, confirmed_at: float | None) -> tuple[Child, Settler, Held,
                                                                                         RecordingReporter]:
    """A child holding deliveries "a" (about to start) and "b", fetched at ``confirmed_at``."""
    reporter = RecordingReporter()
    ours, _theirs = multiprocessing.Pipe()
    child = Child(tasks.app, WorkerSettings(queues=("q",)), ours, 0)
    child.holdings.add([Delivery("q", "a", b""), Delivery("q", "b", b"")], confirmed_at=confirmed_at)
    running = child.holdings.start_next()
    assert running is not None
    return child, Settler(broker, reporter), running, reporter  # type: ignore[arg-type]


def test_a_child_starts_a_delivery_whose_lease_is_certain_without_asking_the_broker() -> None:
    broker = RecordingBroker()
    child, settler, running, reporter = _child_before_start(broker, confirmed_at=lease_clock())

    assert child._lease_held(broker, settler, running)  # type: ignore[arg-type]
    assert (broker.calls, reporter.sent) == ([], [])


def test_after_a_stall_a_child_asks_the_broker_once_and_drops_the_deliveries_it_lost() -> None:
    broker = RecordingBroker()
    broker.lost = {"a", "b"}
    child, settler, running, reporter = _child_before_start(broker, confirmed_at=lease_clock() - 3600)

    assert not child._lease_held(broker, settler, running)  # type: ignore[arg-type]
    child.holdings.finish()
    waiting = child.holdings.start_next()
    assert waiting is not None
    assert not child._lease_held(broker, settler, waiting)  # type: ignore[arg-type]

    assert broker.calls == [("extend", ["a", "b"])], "one call found both lost"
    assert reporter.sent == [events.Dropped([1]), events.Dropped([2])]


def test_after_a_stall_a_child_starts_a_delivery_the_broker_says_it_still_holds() -> None:
    broker = RecordingBroker()
    child, settler, running, reporter = _child_before_start(broker, confirmed_at=lease_clock() - 3600)

    assert child._lease_held(broker, settler, running)  # type: ignore[arg-type]
    assert child._lease_held(broker, settler, running)  # type: ignore[arg-type]

    assert (broker.calls, reporter.sent) == ([("extend", ["a", "b"])], [])


def test_a_child_drops_a_delivery_whose_lease_it_cannot_confirm() -> None:
    broker = RecordingBroker("extend")
    child, settler, running, reporter = _child_before_start(broker, confirmed_at=None)

    assert not child._lease_held(broker, settler, running)  # type: ignore[arg-type]
    assert reporter.sent == [events.Dropped([1])]


# -- giving back -------------------------------------------------------------------------------------------------


def test_unstarted_deliveries_are_reported_released_then_released() -> None:
    settler, broker, reporter = _settler()
    holdings = Holdings()
    holdings.add([Delivery("q", m, b"") for m in ("a", "b", "c")])
    holdings.start_next()

    settler.give_back(holdings, if_waiting_longer_than_s=3600)
    assert (broker.calls, reporter.sent) == ([], []), "they have not waited that long"

    settler.give_back(holdings, if_waiting_longer_than_s=0.0)

    assert reporter.sent == [events.Released([2, 3])]
    assert broker.calls == [("release", ["b", "c"])]
    assert [d.message_id for d in holdings.all()] == ["a"]


def test_giving_back_nothing_calls_nothing() -> None:
    settler, broker, reporter = _settler()

    settler.give_back(Holdings())

    assert (broker.calls, reporter.sent) == ([], [])


def test_a_failed_release_is_logged_not_raised() -> None:
    settler, broker, reporter = _settler("release")
    holdings = Holdings()
    holdings.add([Delivery("q", "a", b"")])

    settler.give_back(holdings)

    assert (broker.calls, reporter.sent) == ([("release", ["a"])], [events.Released([1])])


# -- the supervisor's Settle command -----------------------------------------------------------------------------


def test_settle_acks_the_pending_batch_then_the_timed_out_delivery_and_says_so() -> None:
    settler, broker, reporter = _settler()
    holdings = Holdings()
    [first, running] = holdings.add([Delivery("q", "m1", b""), Delivery("q", "m2", b"")])
    holdings.start_next()
    settler.settle(first, _outcome(ACK))
    holdings.finish()
    holdings.start_next()

    settler.settle_timed_out(running.seq, holdings)

    assert broker.calls == [("ack", ["m1"]), ("ack", ["m2"])]
    assert reporter.sent == [events.Done([1], [("t", "q", "success", 0.5)]), events.Settled(2)]


@pytest.mark.parametrize("running", [pytest.param(True, id="another one running"), pytest.param(False, id="idle")])
def test_settle_for_a_delivery_no_longer_running_does_nothing(running: bool) -> None:
    settler, broker, reporter = _settler()
    holdings = Holdings()
    holdings.add([Delivery("q", "m1", b""), Delivery("q", "m2", b"")])
    if running:
        holdings.start_next()

    settler.settle_timed_out(2, holdings)

    assert (broker.calls, reporter.sent) == ([], [])


def test_a_failed_settle_ack_is_not_reported_settled() -> None:
    settler, broker, reporter = _settler("ack")
    holdings = Holdings()
    [running] = holdings.add([Delivery("q", "m1", b"")])
    holdings.start_next()

    settler.settle_timed_out(running.seq, holdings)

    assert (broker.calls, reporter.sent) == ([("ack", ["m1"])], [])


# -- two threads -------------------------------------------------------------------------------------------------


def test_every_delivery_is_acked_and_reported_exactly_once_while_another_thread_flushes() -> None:
    settler, broker, reporter = _settler()
    stop = threading.Event()

    def background() -> None:
        while not stop.is_set():
            settler.flush()

    thread = threading.Thread(target=background)
    thread.start()
    try:
        for seq in range(1, 2001):
            settler.settle(_held(seq), _outcome(ACK))
    finally:
        stop.set()
        thread.join()
    settler.flush()

    acked = [m for name, ids in broker.calls if name == "ack" for m in ids]
    reported = [seq for event in reporter.sent if isinstance(event, events.Done) for seq in event.seqs]
    assert acked == [f"m{seq}" for seq in range(1, 2001)]
    assert reported == list(range(1, 2001))
