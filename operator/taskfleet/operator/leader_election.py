"""Leader election on a ``coordination.k8s.io`` Lease, so several operator replicas keep exactly one acting.

kopf has no leader election (its peering only pauses lower-priority operators, and needs its own CRDs), so this
follows client-go's ``leaderelection`` package: a candidate acquires the Lease when nobody holds it or when its
holder has not renewed it for ``lease_duration_s`` *as observed on the candidate's own clock* (no clock
comparison between machines); the leader renews every ``retry_period_s`` and gives up acting once it could not
renew for ``renew_deadline_s``, which is shorter than the lease, so it has stopped before anyone may take over.
Every write carries the Lease's ``resourceVersion``, so two candidates never both win. On a clean shutdown the
leader empties the holder, and the standby takes over at its next try instead of after the whole lease.

``decide`` is the pure rule (table-tested); ``LeaderElector`` runs it against the API.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from taskfleet.errors import ClusterConflict, ClusterError, ConfigurationError
from taskfleet.worker.logging import get_logger

_log = get_logger("taskfleet.operator")

Json = dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class LeaseTiming:
    """client-go's three durations, a little shorter: a killed leader is replaced within ``lease_duration_s`` +
    ``retry_period_s``."""

    #: Seconds a standby waits, after it last saw the Lease change, before taking it over.
    lease_duration_s: float = 10.0
    #: Seconds the leader keeps acting without a successful renewal; must be below ``lease_duration_s``.
    renew_deadline_s: float = 7.0
    #: Seconds between two tries to acquire or renew.
    retry_period_s: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period_s < self.renew_deadline_s < self.lease_duration_s:
            raise ConfigurationError("leader election needs 0 < retry period < renew deadline < lease duration")


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The fields of ``Lease.spec`` the election uses."""

    holder: str = ""
    lease_duration_s: int = 0
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0


@dataclass(frozen=True, slots=True)
class Observed:
    """The record a candidate saw last, and when (its monotonic clock) that record last changed."""

    record: LeaseRecord
    changed_at_s: float


@dataclass(frozen=True, slots=True)
class Decision:
    """``write``: the record to write (None: wait, someone else leads); ``observed``: what to remember."""

    write: LeaseRecord | None
    observed: Observed


def decide(me: str, current: LeaseRecord | None, observed: Observed | None, *, now_s: float, now: str,
           lease_duration_s: int) -> Decision:
    """What candidate ``me`` does on seeing ``current`` (None: no Lease yet) at monotonic ``now_s`` (``now``: the
    same instant as an RFC 3339 micro-time for the record)."""
    if observed is None or current != observed.record:
        observed = Observed(current or LeaseRecord(), now_s)
    if current is None:
        return Decision(LeaseRecord(me, lease_duration_s, now, now, 0), observed)
    held_by_other = current.holder not in ("", me)
    if held_by_other and now_s < observed.changed_at_s + current.lease_duration_s:
        return Decision(None, observed)
    if current.holder == me:
        return Decision(replace(current, lease_duration_s=lease_duration_s, renew_time=now), observed)
    return Decision(LeaseRecord(me, lease_duration_s, now, now, current.transitions + 1), observed)


def released(record: LeaseRecord, now: str) -> LeaseRecord:
    """The record a leader writes on a clean shutdown: nobody holds it, so a standby takes over at once."""
    return replace(record, holder="", lease_duration_s=1, renew_time=now)


class LeaseApi(Protocol):
    def read_lease(self, namespace: str, name: str) -> Json | None: ...
    def create_lease(self, body: Json) -> Json: ...
    def replace_lease(self, body: Json) -> Json: ...


class LeaderElector:
    """One candidate for the Lease ``namespace/name``; ``identity`` must be unique per process."""

    def __init__(self, api: LeaseApi, *, namespace: str, name: str, identity: str,
                 timing: LeaseTiming = LeaseTiming(), clock: Callable[[], float] = time.monotonic) -> None:
        self.identity = identity
        self._api = api
        self._namespace = namespace
        self._name = name
        self._timing = timing
        self._clock = clock
        self._observed: Observed | None = None
        self._lease: Json | None = None
        self._leading = threading.Event()
        self._renewed_at_s = 0.0

    @property
    def leading(self) -> bool:
        """Whether this process may act: it holds the Lease and renewed it within the renew deadline."""
        return self._leading.is_set() and self._clock() - self._renewed_at_s < self._timing.renew_deadline_s

    def try_acquire_or_renew(self) -> bool:
        """One round of the election; True when this process holds the Lease afterwards."""
        now_s = self._clock()
        try:
            lease = self._api.read_lease(self._namespace, self._name)
            current = None if lease is None else record_of(lease)
            decision = decide(self.identity, current, self._observed, now_s=now_s, now=micro_time(),
                              lease_duration_s=round(self._timing.lease_duration_s))
            self._observed = decision.observed
            if decision.write is None:
                self._leading.clear()  # someone else holds a live lease: whatever this process thought, it follows
                return False
            body = self._body(lease, decision.write)
            self._lease = self._api.create_lease(body) if lease is None else self._api.replace_lease(body)
        except ClusterConflict:
            return False  # another candidate wrote first; look again next round
        except ClusterError as exc:
            _log.warning("leader_election_failed", lease=f"{self._namespace}/{self._name}", error=str(exc))
            return False
        self._observed = Observed(record_of(self._lease), now_s)
        if not self._leading.is_set():
            _log.info("leader_elected", lease=f"{self._namespace}/{self._name}", identity=self.identity)
        self._renewed_at_s = now_s
        self._leading.set()
        return True

    def acquire(self, stop: threading.Event) -> bool:
        """Block until this process leads (True) or ``stop`` is set (False)."""
        _log.info("leader_election_standby", lease=f"{self._namespace}/{self._name}", identity=self.identity)
        while not stop.is_set():
            if self.try_acquire_or_renew():
                return True
            stop.wait(self._timing.retry_period_s)
        return False

    def keep_leading(self, stop: threading.Event, on_lost: Callable[[], None]) -> None:
        """Renew every retry period until ``stop`` is set; past the renew deadline without a renewal, stop leading
        and call ``on_lost`` once (the operator then exits, and its pod restarts as a standby)."""
        while not stop.wait(self._timing.retry_period_s):
            if self.try_acquire_or_renew():
                continue
            if not self.leading:
                self._leading.clear()
                _log.error("leader_lease_lost", lease=f"{self._namespace}/{self._name}", identity=self.identity)
                on_lost()
                return

    def release(self) -> None:
        """Give the Lease up (clean shutdown), if this process still holds it."""
        if not self._leading.is_set() or self._lease is None:
            return
        self._leading.clear()
        body = self._body(self._lease, released(record_of(self._lease), micro_time()))
        try:
            self._api.replace_lease(body)
        except ClusterError as exc:  # it expires by itself
            _log.warning("leader_lease_not_released", error=str(exc))

    def _body(self, lease: Json | None, record: LeaseRecord) -> Json:
        metadata: Json = {"name": self._name, "namespace": self._namespace}
        if lease is not None:
            metadata["resourceVersion"] = lease["metadata"]["resourceVersion"]
        spec = {"holderIdentity": record.holder, "leaseDurationSeconds": record.lease_duration_s,
                "acquireTime": record.acquire_time, "renewTime": record.renew_time,
                "leaseTransitions": record.transitions}
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}


def record_of(lease: Json) -> LeaseRecord:
    spec = lease.get("spec") or {}
    return LeaseRecord(str(spec.get("holderIdentity") or ""), int(spec.get("leaseDurationSeconds") or 0),
                       spec.get("acquireTime"), spec.get("renewTime"), int(spec.get("leaseTransitions") or 0))


def micro_time(at: datetime | None = None) -> str:
    """An RFC 3339 time with microseconds, as Lease's ``MicroTime`` fields want."""
    return (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
