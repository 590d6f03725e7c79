"""What an event stream adds up to: tasks per second, failures, and per task its counts and runtimes; the workers
seen. Pure (no I/O, no clock of its own: every time is an argument or an event's timestamp), so ``taskfleet events``
and a dashboard can share it and its maths is unit-tested.

Rates are over the last ``window_s`` seconds of event time: finished tasks (succeeded, failed, dead-lettered,
revoked; not retried, which runs again) whose end event falls in the window, divided by the window, or by the time
since the first event when that is shorter (a view opened two seconds ago does not divide by ten). Runtimes are the
``runtime`` of ``task-succeeded`` and ``task-failed`` events; the latest ``runtimes_kept`` per task are kept, so
memory stays bounded whatever the stream's length.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from taskfleet.fleet.events import FleetEvent

#: Seconds of event time the rates are computed over.
DEFAULT_WINDOW_S = 10.0
#: Runtimes kept per task for the mean and percentiles.
DEFAULT_RUNTIMES_KEPT = 1000
#: The end events of a task that ran its course (its message is settled).
FINISHED = frozenset({"task-succeeded", "task-failed", "task-dead-lettered", "task-revoked"})
#: The end events that count as failures.
FAILED = frozenset({"task-failed", "task-dead-lettered"})
#: A task's counts, in the order a view shows them.
TASK_COLUMNS: tuple[str, ...] = ("task-sent", "task-received", "task-started", "task-succeeded", "task-failed",
                                 "task-retried", "task-revoked", "task-dead-lettered")


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) of ``values`` by the nearest-rank method (a value that occurred), or None
    for no values."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be 0-100, got {q}")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class TaskStats:
    """One task name's counts (by event type) and its latest runtimes (seconds)."""

    name: str
    counts: Counter[str] = field(default_factory=Counter)
    runtimes: deque[float] = field(default_factory=lambda: deque(maxlen=DEFAULT_RUNTIMES_KEPT))

    @property
    def mean_s(self) -> float | None:
        return sum(self.runtimes) / len(self.runtimes) if self.runtimes else None

    @property
    def p50_s(self) -> float | None:
        return percentile(self.runtimes, 50)

    @property
    def p95_s(self) -> float | None:
        return percentile(self.runtimes, 95)

    @property
    def max_s(self) -> float | None:
        return max(self.runtimes) if self.runtimes else None


@dataclass
class WorkerSeen:
    """A worker as its latest event showed it."""

    id: str
    last_seen: float
    online: bool
    active: int | None = None
    processed: int | None = None


class EventStats:
    """Adds events up (module docstring). Feed it with ``add``; read ``rate``, ``failure_rate``, ``tasks``,
    ``workers`` and ``totals``."""

    def __init__(self, *, window_s: float = DEFAULT_WINDOW_S, runtimes_kept: int = DEFAULT_RUNTIMES_KEPT) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be > 0")
        self.window_s = window_s
        self.runtimes_kept = runtimes_kept
        #: Events seen, by type.
        self.totals: Counter[str] = Counter()
        self._tasks: dict[str, TaskStats] = {}
        self._names: dict[str, str] = {}  # task id -> name, for end events that lack one (bounded below)
        self._finished: deque[tuple[float, bool]] = deque()  # (timestamp, failed) in the window
        self.workers: dict[str, WorkerSeen] = {}
        self.first_at: float | None = None
        self.last_at: float | None = None

    def add_all(self, events: Iterable[FleetEvent]) -> None:
        for event in events:
            self.add(event)

    def add(self, event: FleetEvent) -> None:
        """Count ``event`` in."""
        ts = event.timestamp
        self.totals[event.type] += 1
        self.first_at = ts if self.first_at is None else min(self.first_at, ts)
        self.last_at = ts if self.last_at is None else max(self.last_at, ts)
        fields = event.fields
        if event.type.startswith("worker-"):
            self._worker(event)
            return
        name = self._name(fields)
        stats = self._tasks.get(name)
        if stats is None:
            stats = self._tasks[name] = TaskStats(name, runtimes=deque(maxlen=self.runtimes_kept))
        stats.counts[event.type] += 1
        runtime = fields.get("runtime")
        if event.type in ("task-succeeded", "task-failed") and isinstance(runtime, int | float):
            stats.runtimes.append(float(runtime))
        if event.type in FINISHED:
            self._finished.append((ts, event.type in FAILED))
            self._trim(self.last_at)
        worker = fields.get("worker")
        if isinstance(worker, str) and worker in self.workers:
            self.workers[worker].last_seen = max(self.workers[worker].last_seen, ts)

    def rate(self, now: float | None = None) -> float:
        """Finished tasks per second over the window ending at ``now`` (default: the latest event's time)."""
        return self._rate(now, failed_only=False)

    def failure_rate(self, now: float | None = None) -> float:
        """Failed and dead-lettered tasks per second over the same window."""
        return self._rate(now, failed_only=True)

    def tasks(self) -> list[TaskStats]:
        """Every task name seen, by name."""
        return [self._tasks[name] for name in sorted(self._tasks)]

    @property
    def failures(self) -> int:
        """Failed and dead-lettered tasks in all."""
        return sum(self.totals[kind] for kind in FAILED)

    def _rate(self, now: float | None, *, failed_only: bool) -> float:
        end = now if now is not None else self.last_at
        if end is None or self.first_at is None:
            return 0.0
        self._trim(end)
        start = end - self.window_s
        count = sum(1 for ts, failed in self._finished if start < ts <= end and (failed or not failed_only))
        span = min(self.window_s, max(end - self.first_at, 1.0))
        return count / span

    def _trim(self, end: float | None) -> None:
        if end is None:
            return
        while self._finished and self._finished[0][0] <= end - self.window_s:
            self._finished.popleft()

    def _name(self, fields: Mapping[str, Any]) -> str:
        uuid, name = fields.get("uuid"), fields.get("name")
        if isinstance(name, str) and name not in ("", "?"):
            if isinstance(uuid, str):
                if len(self._names) >= 10_000:  # a bound, not a cache policy: forget the oldest
                    del self._names[next(iter(self._names))]
                self._names[uuid] = name
            return name
        if isinstance(uuid, str) and uuid in self._names:
            return self._names[uuid]
        return "?"

    def _worker(self, event: FleetEvent) -> None:
        fields = event.fields
        worker = fields.get("worker")
        if not isinstance(worker, str):
            return
        seen = self.workers.get(worker)
        if seen is None:
            seen = self.workers[worker] = WorkerSeen(worker, event.timestamp, online=True)
        seen.last_seen = max(seen.last_seen, event.timestamp)
        seen.online = event.type != "worker-offline"
        active, processed = fields.get("active"), fields.get("processed")
        seen.active = active if isinstance(active, int) else seen.active
        seen.processed = processed if isinstance(processed, int) else seen.processed
