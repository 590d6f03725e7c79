"""The dashboard's views of TaskQueue and Event objects (``taskfleet.dashboard.kube``'s pure functions); reading
them from a real API server with the chart's RBAC is tests/e2e/test_dashboard_kube.py."""

from __future__ import annotations

from typing import Any

import pytest

from taskfleet.dashboard.kube import kube_event, parse_time, task_queue_view
from taskfleet.errors import ClusterError

TASK_QUEUE: dict[str, Any] = {
    "apiVersion": "taskfleet.io/v1alpha1", "kind": "TaskQueue",
    "metadata": {"name": "emails", "namespace": "shop", "uid": "u-1"},
    "spec": {
        "queues": ["emails", "emails-low"],
        "broker": {"urlFrom": {"secretKeyRef": {"name": "brokers", "key": "redis-url"}}},
        "worker": {"image": "shop/worker:1", "app": "shop.tasks:app", "env": [{"name": "TOKEN", "value": "s3cret"}]},
        "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 8},
    },
    "status": {
        "replicas": 3, "desiredReplicas": 4, "readyReplicas": 2, "workers": "2/3",
        "conditions": [{"type": "Scaling", "status": "True", "reason": "ScaledUp", "message": "3 -> 4 (40 ready)",
                        "lastTransitionTime": "2026-12-04T10:00:00Z", "observedGeneration": 2}],
    },
}


def test_a_task_queue_view_has_its_queues_autoscaling_range_status_and_conditions() -> None:
    view = task_queue_view(TASK_QUEUE)

    assert (view.namespace, view.name, view.queues) == ("shop", "emails", ["emails", "emails-low"])
    assert (view.replicas, view.desired, view.ready_workers) == (3, 4, 2)
    assert (view.min_replicas, view.max_replicas) == (1, 8)
    assert view.conditions == [{"type": "Scaling", "status": "True", "reason": "ScaledUp",
                                "message": "3 -> 4 (40 ready)"}]


def test_a_task_queue_view_carries_nothing_of_the_broker_or_worker_spec() -> None:
    shown = repr(task_queue_view(TASK_QUEUE))

    for secretish in ("brokers", "redis-url", "s3cret", "TOKEN", "shop/worker"):
        assert secretish not in shown


def test_a_task_queue_the_operator_has_not_seen_yet_has_zero_replicas_and_unknown_counts() -> None:
    view = task_queue_view({**TASK_QUEUE, "status": {}})

    assert (view.replicas, view.desired, view.ready_workers, view.conditions) == (0, None, None, [])


def test_without_autoscaling_there_is_no_replica_range() -> None:
    view = task_queue_view({**TASK_QUEUE, "spec": {"queues": ["q"], "autoscaling": {"enabled": False,
                                                                                   "minReplicas": 0}}})

    assert (view.min_replicas, view.max_replicas) == (None, None)


def test_an_event_takes_its_last_time_and_count() -> None:
    event = kube_event({"type": "Warning", "reason": "BrokerUnreachable", "message": "connection refused",
                        "firstTimestamp": "2026-12-04T10:00:00Z", "lastTimestamp": "2026-12-04T10:05:00Z",
                        "count": 6})

    assert event.at == parse_time("2026-12-04T10:05:00Z")
    assert (event.type, event.reason, event.message, event.count) == ("Warning", "BrokerUnreachable",
                                                                      "connection refused", 6)


def test_an_event_of_a_newer_reporter_has_an_event_time_and_a_series() -> None:
    event = kube_event({"reason": "ScaledUp", "eventTime": "2026-12-04T10:00:00.250000Z",
                        "series": {"count": 3, "lastObservedTime": "2026-12-04T10:02:00.500000Z"}})

    assert event.at == pytest.approx(parse_time("2026-12-04T10:02:00Z") + 0.5)
    assert (event.type, event.count) == ("Normal", 3)


@pytest.mark.parametrize(("text", "expected"), [
    ("1970-01-01T00:00:00Z", 0.0),
    ("1970-01-01T00:01:40.5Z", 100.5),
    ("1970-01-01T01:00:00+01:00", 0.0),
])
def test_kubernetes_times_read_as_unix_seconds(text: str, expected: float) -> None:
    assert parse_time(text) == expected


def test_an_unreadable_time_is_a_cluster_error() -> None:
    with pytest.raises(ClusterError, match="unreadable time"):
        parse_time("yesterday")
