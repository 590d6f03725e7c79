"""Leader election on a Lease (operator/leader_election.py): the pure rule, table-tested, and the elector against
an in-memory Lease API with optimistic concurrency."""

from __future__ import annotations

import copy
import threading
from typing import Any

import pytest

from taskfleet.errors import ClusterConflict, ClusterError, ConfigurationError
from taskfleet.operator.leader_election import (
    Decision,
    LeaderElector,
    LeaseRecord,
    LeaseTiming,
    Observed,
    decide,
    released,
)

Json = dict[str, Any]
NOW = "2026-12-04T08:00:00.000000Z"
HELD_BY_B = LeaseRecord("b", 10, "t0", "t1", 3)


@pytest.mark.parametrize(("current", "observed", "now_s", "write"), [
    pytest.param(None, None, 100.0, LeaseRecord("a", 10, NOW, NOW, 0), id="no Lease: create it"),
    pytest.param(LeaseRecord("", 1, "t0", "t1", 3), None, 100.0, LeaseRecord("a", 10, NOW, NOW, 4),
                 id="released: take it at once"),
    pytest.param(HELD_BY_B, None, 100.0, None, id="held, first seen now: wait a whole lease"),
    pytest.param(HELD_BY_B, Observed(HELD_BY_B, 95.0), 100.0, None, id="held, seen unchanged 5 s: wait"),
    pytest.param(HELD_BY_B, Observed(HELD_BY_B, 90.0), 100.0, LeaseRecord("a", 10, NOW, NOW, 4),
                 id="held, unchanged for the lease duration: take over"),
    pytest.param(HELD_BY_B, Observed(LeaseRecord("b", 10, "t0", "t0", 3), 80.0), 100.0, None,
                 id="renewed since last seen: the clock starts again"),
    pytest.param(LeaseRecord("a", 10, "t0", "t1", 3), None, 100.0, LeaseRecord("a", 10, "t0", NOW, 3),
                 id="held by me: renew, keeping acquire time and transitions"),
])
def test_the_election_rule(current: LeaseRecord | None, observed: Observed | None, now_s: float,
                           write: LeaseRecord | None) -> None:
    decision = decide("a", current, observed, now_s=now_s, now=NOW, lease_duration_s=10)

    assert decision.write == write


def test_a_changed_record_is_observed_at_the_candidates_own_time() -> None:
    decision = decide("a", HELD_BY_B, Observed(LeaseRecord("b", 10, "t0", "t0", 3), 50.0), now_s=100.0, now=NOW,
                      lease_duration_s=10)

    assert decision == Decision(None, Observed(HELD_BY_B, 100.0))


def test_a_released_lease_has_no_holder() -> None:
    assert released(HELD_BY_B, NOW) == LeaseRecord("", 1, "t0", NOW, 3)


@pytest.mark.parametrize(("lease", "deadline", "retry"), [(10, 10, 2), (10, 7, 7), (10, 7, 0)])
def test_timings_must_nest(lease: float, deadline: float, retry: float) -> None:
    with pytest.raises(ConfigurationError):
        LeaseTiming(lease_duration_s=lease, renew_deadline_s=deadline, retry_period_s=retry)


class MemoryLeases:
    """One Lease with resourceVersion checks, like the API server; ``down`` makes every call fail."""

    def __init__(self) -> None:
        self.lease: Json | None = None
        self.version = 0
        self.down = False

    def read_lease(self, namespace: str, name: str) -> Json | None:
        self._check()
        return copy.deepcopy(self.lease)

    def create_lease(self, body: Json) -> Json:
        self._check()
        if self.lease is not None:
            raise ClusterConflict("exists")
        return self._store(body)

    def replace_lease(self, body: Json) -> Json:
        self._check()
        assert self.lease is not None
        if body["metadata"]["resourceVersion"] != self.lease["metadata"]["resourceVersion"]:
            raise ClusterConflict("stale")
        return self._store(body)

    def holder(self) -> str:
        return str((self.lease or {}).get("spec", {}).get("holderIdentity"))

    def _store(self, body: Json) -> Json:
        self.version += 1
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(self.lease)

    def _check(self) -> None:
        if self.down:
            raise ClusterError("Kubernetes API unreachable")


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def candidates(leases: MemoryLeases, clock: Clock) -> tuple[LeaderElector, LeaderElector]:
    def elector(identity: str) -> LeaderElector:
        return LeaderElector(leases, namespace="ops", name="taskfleet", identity=identity, clock=clock)

    return elector("a"), elector("b")


def test_of_two_candidates_one_leads_and_the_other_waits() -> None:
    leases, clock = MemoryLeases(), Clock()
    a, b = candidates(leases, clock)

    assert a.try_acquire_or_renew() is True
    assert b.try_acquire_or_renew() is False
    assert (a.leading, b.leading, leases.holder()) == (True, False, "a")


def test_the_standby_takes_over_a_lease_its_holder_stopped_renewing_after_the_lease_duration() -> None:
    leases, clock = MemoryLeases(), Clock()
    a, b = candidates(leases, clock)
    a.try_acquire_or_renew()
    b.try_acquire_or_renew()  # b sees a's lease now

    clock.now_s += 9.9
    assert b.try_acquire_or_renew() is False
    clock.now_s += 0.2
    assert b.try_acquire_or_renew() is True
    assert leases.holder() == "b"
    assert leases.lease is not None
    assert leases.lease["spec"]["leaseTransitions"] == 1


def test_a_renewing_leader_keeps_the_lease() -> None:
    leases, clock = MemoryLeases(), Clock()
    a, b = candidates(leases, clock)
    a.try_acquire_or_renew()
    for _ in range(20):
        clock.now_s += 2
        assert a.try_acquire_or_renew() is True
        assert b.try_acquire_or_renew() is False
    assert leases.holder() == "a"


def test_a_released_lease_is_taken_at_the_standbys_next_try() -> None:
    leases, clock = MemoryLeases(), Clock()
    a, b = candidates(leases, clock)
    a.try_acquire_or_renew()
    b.try_acquire_or_renew()

    a.release()

    assert a.leading is False
    assert b.try_acquire_or_renew() is True


def test_a_leader_that_cannot_renew_stops_leading_after_the_renew_deadline() -> None:
    leases, clock = MemoryLeases(), Clock()
    a, _ = candidates(leases, clock)
    a.try_acquire_or_renew()
    leases.down = True

    clock.now_s += 6.9
    assert a.try_acquire_or_renew() is False
    assert a.leading is True
    clock.now_s += 0.2
    assert a.leading is False, "past the renew deadline (7 s), below the lease (10 s): it stops first"


def test_keep_leading_calls_on_lost_once_renewals_fail_past_the_deadline() -> None:
    leases = MemoryLeases()
    a = LeaderElector(leases, namespace="ops", name="taskfleet", identity="a",
                      timing=LeaseTiming(lease_duration_s=0.3, renew_deadline_s=0.2, retry_period_s=0.01))
    a.try_acquire_or_renew()
    leases.down = True
    lost = threading.Event()

    a.keep_leading(threading.Event(), lost.set)

    assert lost.is_set()
    assert a.leading is False


def test_a_leader_that_finds_someone_else_holding_the_lease_stops_at_once() -> None:
    leases, clock = MemoryLeases(), Clock()
    a, b = candidates(leases, clock)
    a.try_acquire_or_renew()
    b.try_acquire_or_renew()
    clock.now_s += 11  # a was partitioned away; b took over
    assert b.try_acquire_or_renew() is True

    assert a.try_acquire_or_renew() is False
    assert a.leading is False
