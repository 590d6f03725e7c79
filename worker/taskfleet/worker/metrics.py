"""Prometheus metrics of one worker, owned by the supervisor process (children report events over pipes).

Only the supervisor holds metrics and serves them, so a plain per-instance ``CollectorRegistry`` is enough:
no prometheus multiprocess mode, no global registry.

prometheus_client (with the http.server, urllib and wsgiref it imports, ~2 MiB) is imported when metrics are
created, not with this module: a worker or beat without a health port uses the ``Unserved*`` stand-ins and never
loads it, and neither do its forked children.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = [
    "LATENESS_BUCKETS_S",
    "OUTCOMES",
    "RESTART_REASONS",
    "RUNTIME_BUCKETS_S",
    "BeatMetrics",
    "UnservedBeatMetrics",
    "UnservedWorkerMetrics",
    "WorkerMetrics",
]

OUTCOMES = frozenset({"success", "failure", "retry", "revoked", "dead_lettered", "time_limit", "duplicate",
                      "deferred"})
"""Every value the ``outcome`` label of ``taskfleet_tasks_total`` may take."""

RESTART_REASONS = ("max_tasks", "max_memory", "crashed", "time_limit", "revoked")
"""The known reasons a child is replaced; exported at 0 from the start so ``rate()`` sees every series."""

RUNTIME_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)
"""Histogram buckets in seconds: tasks from 1 ms to 10 min (slower ones land in ``+Inf``)."""


LATENESS_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 300.0)
"""Histogram buckets in seconds for how late beat sent a tick (a takeover makes ticks about one lease late)."""


class WorkerMetrics:
    """The metrics of one worker, in a registry of its own (safe to create several, e.g. in tests).

    prometheus_client metrics are thread-safe, so the supervisor loop may update them while the health
    server's threads render them.
    """

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram  # deferred: module docstring

        self.registry = CollectorRegistry(auto_describe=True)
        self._tasks = Counter(
            "taskfleet_tasks_total",
            "Tasks finished, by task name, queue and outcome.",
            ("task", "queue", "outcome"),
            registry=self.registry,
        )
        self._runtime = Histogram(
            "taskfleet_task_runtime_seconds",
            "Wall-clock run time of finished tasks, in seconds.",
            ("task", "queue"),
            buckets=RUNTIME_BUCKETS_S,
            registry=self.registry,
        )
        self._in_flight = Gauge(
            "taskfleet_tasks_in_flight",
            "Tasks currently running in this worker's children.",
            registry=self.registry,
        )
        self._restarts = Counter(
            "taskfleet_child_restarts_total",
            "Child processes replaced, by reason.",
            ("reason",),
            registry=self.registry,
        )
        self._children = Gauge(
            "taskfleet_worker_children",
            "Child processes currently alive.",
            registry=self.registry,
        )
        self._broker_reachable = Gauge(
            "taskfleet_broker_reachable",
            "1 when the last broker check succeeded, else 0.",
            registry=self.registry,
        )
        for reason in RESTART_REASONS:
            self._restarts.labels(reason=reason)

    def task_finished(self, task: str, queue: str, outcome: str, runtime_s: float) -> None:
        """Count one finished task and observe its run time (seconds; negative clock skew counts as 0).

        Raises:
            ValueError: ``outcome`` is not one of ``OUTCOMES`` (a typo would create a new time series).
        """
        _check_outcome(outcome)
        self._tasks.labels(task=task, queue=queue, outcome=outcome).inc()
        self._runtime.labels(task=task, queue=queue).observe(max(0.0, runtime_s))

    def set_in_flight(self, n: int) -> None:
        """Set the number of tasks running right now."""
        self._in_flight.set(n)

    def child_restarted(self, reason: str) -> None:
        """Count one replaced child; ``reason`` is usually one of ``RESTART_REASONS``."""
        self._restarts.labels(reason=reason).inc()

    def set_children(self, n: int) -> None:
        """Set the number of live child processes."""
        self._children.set(n)

    def set_broker_reachable(self, ok: bool) -> None:
        """Record whether the broker answered the last check (exported as 1 or 0)."""
        self._broker_reachable.set(1 if ok else 0)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of this registry and its content type, for ``GET /metrics``."""
        return _render(self.registry)


class BeatMetrics:
    """The metrics of one beat replica, in ``registry`` (a worker's, with ``taskfleet worker --beat``) or a
    registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram  # deferred: module docstring

        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._fires = Counter(
            "taskfleet_beat_fires_total",
            "Periodic ticks this replica sent, by schedule entry.",
            ("entry",),
            registry=self.registry,
        )
        self._lateness = Histogram(
            "taskfleet_beat_lateness_seconds",
            "How long after its scheduled time a tick was sent, in seconds.",
            ("entry",),
            buckets=LATENESS_BUCKETS_S,
            registry=self.registry,
        )
        self._skipped = Counter(
            "taskfleet_beat_skips_total",
            "Times missed ticks were dropped by an entry's catch-up policy.",
            ("entry",),
            registry=self.registry,
        )
        self._leader = Gauge(
            "taskfleet_beat_leader",
            "1 while this replica holds the beat lease, else 0.",
            registry=self.registry,
        )

    def fired(self, entry: str, lateness_s: float) -> None:
        """Count one sent tick of ``entry`` and observe its lateness (seconds, >= 0)."""
        self._fires.labels(entry=entry).inc()
        self._lateness.labels(entry=entry).observe(max(0.0, lateness_s))

    def skipped(self, entry: str) -> None:
        """Count one drop of missed ticks of ``entry``."""
        self._skipped.labels(entry=entry).inc()

    def set_leader(self, leading: bool) -> None:
        """Record whether this replica leads (exported as 1 or 0)."""
        self._leader.set(1 if leading else 0)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of this registry, for ``GET /metrics``."""
        return _render(self.registry)


class UnservedWorkerMetrics(WorkerMetrics):
    """Stands in for ``WorkerMetrics`` in a worker that serves no ``/metrics`` (no health port): the same calls,
    kept nowhere, so prometheus_client is never imported. It has no ``registry``."""

    def __init__(self) -> None:
        """Nothing to create (``WorkerMetrics.__init__`` would import prometheus_client)."""

    def task_finished(self, task: str, queue: str, outcome: str, runtime_s: float) -> None:
        """Check ``outcome`` as ``WorkerMetrics`` does (a typo still fails in development), count nothing."""
        _check_outcome(outcome)

    def set_in_flight(self, n: int) -> None:
        """Nothing to set."""

    def child_restarted(self, reason: str) -> None:
        """Nothing to count."""

    def set_children(self, n: int) -> None:
        """Nothing to set."""

    def set_broker_reachable(self, ok: bool) -> None:
        """Nothing to set."""

    def render(self) -> tuple[bytes, str]:
        """Never called: nothing serves these metrics.

        Raises:
            RuntimeError: always.
        """
        raise RuntimeError("this worker keeps no metrics: it serves no /metrics (no health port)")


class UnservedBeatMetrics(BeatMetrics):
    """Stands in for ``BeatMetrics`` in a beat replica that serves no ``/metrics``: the same calls, kept nowhere,
    so prometheus_client is never imported. It has no ``registry``."""

    def __init__(self) -> None:
        """Nothing to create (``BeatMetrics.__init__`` would import prometheus_client)."""

    def fired(self, entry: str, lateness_s: float) -> None:
        """Nothing to count."""

    def skipped(self, entry: str) -> None:
        """Nothing to count."""

    def set_leader(self, leading: bool) -> None:
        """Nothing to set."""

    def render(self) -> tuple[bytes, str]:
        """Never called: nothing serves these metrics.

        Raises:
            RuntimeError: always.
        """
        raise RuntimeError("this beat keeps no metrics: it serves no /metrics (no health port)")


def _check_outcome(outcome: str) -> None:
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown task outcome {outcome!r}; expected one of {sorted(OUTCOMES)}")


def _render(registry: CollectorRegistry) -> tuple[bytes, str]:
    from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(registry), CONTENT_TYPE_LATEST
