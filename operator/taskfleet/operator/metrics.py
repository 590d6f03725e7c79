"""Prometheus metrics of the operator, in a registry of its own (served by ``taskfleet operator --metrics-port``)."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["OperatorMetrics"]

POLL_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_PER_QUEUE = ("namespace", "taskqueue")


class OperatorMetrics:
    """Reconciles, scale events, live depth per TaskQueue and poll latency."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.reconciles = Counter(
            "taskfleet_operator_reconciles_total",
            "Worker Deployment reconciles, by result (created, updated, unchanged, invalid, error).",
            ("result",), registry=self.registry,
        )
        self.scale_events = Counter(
            "taskfleet_operator_scale_events_total",
            "Replica changes of worker Deployments, by direction (up, down).",
            (*_PER_QUEUE, "direction"), registry=self.registry,
        )
        self.poll_seconds = Histogram(
            "taskfleet_operator_poll_seconds",
            "Duration of one autoscaler poll (depth read, decision, scale, status), by outcome.",
            ("outcome",), buckets=POLL_BUCKETS_S, registry=self.registry,
        )
        self.ready = Gauge("taskfleet_operator_queue_ready", "Ready messages over a TaskQueue's queues.",
                           _PER_QUEUE, registry=self.registry)
        self.in_flight = Gauge("taskfleet_operator_queue_in_flight",
                               "In-flight (delivered, unacked) messages over a TaskQueue's queues.",
                               _PER_QUEUE, registry=self.registry)
        self.due = Gauge("taskfleet_operator_queue_due",
                         "Delayed messages already due that no fetch has moved to ready yet (Redis) over a "
                         "TaskQueue's queues.", _PER_QUEUE, registry=self.registry)
        self.replicas = Gauge("taskfleet_operator_replicas", "Worker replicas of a TaskQueue.",
                              _PER_QUEUE, registry=self.registry)
        self.desired = Gauge("taskfleet_operator_desired_replicas", "Worker replicas a TaskQueue should run.",
                             _PER_QUEUE, registry=self.registry)
        self.broker_reachable = Gauge("taskfleet_operator_broker_reachable",
                                      "1 when the last poll read the TaskQueue's depth, else 0.",
                                      _PER_QUEUE, registry=self.registry)
        for result in ("created", "updated", "unchanged", "invalid", "error"):
            self.reconciles.labels(result)
        for outcome in ("ok", "broker_error", "cluster_error", "invalid"):
            self.poll_seconds.labels(outcome)

    def forget(self, namespace: str, name: str) -> None:
        """Drop the series of a deleted TaskQueue."""
        for gauge in (self.ready, self.in_flight, self.due, self.replicas, self.desired, self.broker_reachable):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, name)
        for direction in ("up", "down"):
            with contextlib.suppress(KeyError):
                self.scale_events.remove(namespace, name, direction)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def exposition(self) -> tuple[bytes, str]:
        """The body and content type of ``GET /metrics``."""
        return self.render(), CONTENT_TYPE_LATEST
