"""The dashboard's views of TaskQueue and Event objects (``taskfleet.dashboard.kube``) and its calls on a faked
API; reading them from a real API server with the chart's RBAC is tests/e2e/test_dashboard_kube.py."""

from __future__ import annotations

import json
from typing import Any

import kubernetes
import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from taskfleet.dashboard.kube import (
    PAGE_SIZE,
    REQUEST_TIMEOUT_S,
    KubeReader,
    forbidden,
    kube_event,
    parse_time,
    task_queue_view,
)
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


class FakeResponse:
    def __init__(self, body: dict[str, Any]) -> None:
        self.data = json.dumps(body).encode()


def reader_with(monkeypatch: pytest.MonkeyPatch, api: str, method: str, answer: Any,
                namespaces: list[str] | None = None) -> tuple[KubeReader, list[dict[str, Any]]]:
    """A reader whose one API method ``api``.``method`` is ``answer(*args, **params)``; the calls are recorded."""
    calls: list[dict[str, Any]] = []

    def fake(*args: Any, **params: Any) -> Any:
        calls.append({"args": args, **params})
        return answer(*args, **params)

    reader = KubeReader(kubernetes.client.ApiClient(kubernetes.client.Configuration()), namespaces=namespaces)
    monkeypatch.setattr(getattr(reader, api), method, fake)
    return reader, calls


def test_task_queues_are_read_page_by_page_following_continue_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    pages = {None: {"items": [{**TASK_QUEUE, "metadata": {"name": "b", "namespace": "x"}}],
                    "metadata": {"continue": "page-2"}},
             "page-2": {"items": [{**TASK_QUEUE, "metadata": {"name": "a", "namespace": "x"}}], "metadata": {}}}
    reader, calls = reader_with(monkeypatch, "_custom", "list_cluster_custom_object",
                                lambda *a, **p: FakeResponse(pages[p.get("_continue")]))

    views = reader.task_queues()

    assert [v.name for v in views] == ["a", "b"], "sorted by namespace and name"
    assert [c.get("_continue") for c in calls] == [None, "page-2"]
    assert all(c["limit"] == PAGE_SIZE and c["_request_timeout"] == REQUEST_TIMEOUT_S for c in calls)


def test_with_namespaces_task_queues_are_listed_in_each_and_only_those(monkeypatch: pytest.MonkeyPatch) -> None:
    reader, calls = reader_with(monkeypatch, "_custom", "list_namespaced_custom_object",
                                lambda *a, **p: FakeResponse({"items": []}), namespaces=["shop", "billing", "shop"])

    assert reader.task_queues() == []
    assert [c["args"][2] for c in calls] == ["shop", "billing"]


def test_events_are_selected_by_the_task_queue_and_cut_to_the_newest(monkeypatch: pytest.MonkeyPatch) -> None:
    def event(reason: str, minute: int, api_version: str = "taskfleet.io/v1alpha1") -> dict[str, Any]:
        return {"reason": reason, "lastTimestamp": f"2026-12-04T10:{minute:02d}:00Z",
                "involvedObject": {"apiVersion": api_version, "kind": "TaskQueue", "name": "emails"}}
    items = [event("ScaledUp", 1), event("Stable", 3), event("ScaledDown", 2), event("Other", 9, "example.com/v1")]
    reader, calls = reader_with(monkeypatch, "_core", "list_namespaced_event",
                                lambda *a, **p: FakeResponse({"items": items}))

    events = reader.events("shop", "emails", limit=2)

    assert [e.reason for e in events] == ["Stable", "ScaledDown"]
    assert calls[0]["args"] == ("shop",)
    assert calls[0]["field_selector"] == "involvedObject.kind=TaskQueue,involvedObject.name=emails"


def test_a_refusal_by_rbac_is_a_forbidden_cluster_error_with_the_api_servers_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*args: Any, **params: Any) -> Any:
        raise ApiException(status=403, reason="Forbidden")

    reader, _ = reader_with(monkeypatch, "_custom", "list_cluster_custom_object", refuse)

    with pytest.raises(ClusterError, match="403 Forbidden") as refused:
        reader.task_queues()
    assert forbidden(refused.value)


def test_an_unreachable_api_server_is_a_cluster_error_but_not_a_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(*args: Any, **params: Any) -> Any:
        raise urllib3.exceptions.MaxRetryError(None, "/apis", "connection refused")  # type: ignore[arg-type]

    reader, _ = reader_with(monkeypatch, "_core", "list_namespaced_event", unreachable)

    with pytest.raises(ClusterError, match="unreachable") as failed:
        reader.events("shop", "emails")
    assert not forbidden(failed.value)
