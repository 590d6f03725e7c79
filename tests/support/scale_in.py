"""Helpers of the scale-in tests: worker pods as API objects (the envtest tier has no kubelet) and the heartbeats
their workers would send, written to the app's real fleet store."""

from __future__ import annotations

import time
from typing import Any

from taskfleet.brokers import connect
from taskfleet.brokers.fleet_store import connect_fleet_store
from taskfleet.fleet.records import ChildState, PodInfo, WorkerRecord
from taskfleet.settings import BrokerSettings
from tests.support.k8s import ControlPlane
from tests.support.operator import apply, get

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
#: Heartbeats outlive the test (a real worker renews its record every 2 s).
HEARTBEAT_TTL_S = 600.0


def create_worker_pod(kube: ControlPlane, namespace: str, taskqueue: str, name: str) -> dict[str, Any]:
    """A Pod carrying the labels of ``taskqueue``'s worker Deployment, as its ReplicaSet would create it."""
    apply(kube, namespace, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "taskfleet-worker",
                                              "app.kubernetes.io/instance": taskqueue}},
        "spec": {"containers": [{"name": "worker", "image": "ghcr.io/taskfleet/worker:test"}]},
    })
    pod = get(kube, namespace, "pod", name)
    assert pod is not None
    return pod


def deletion_cost(kube: ControlPlane, namespace: str, pod: str) -> str | None:
    found = get(kube, namespace, "pod", pod) or {}
    return ((found.get("metadata") or {}).get("annotations") or {}).get(DELETION_COST)


def resource_version(kube: ControlPlane, namespace: str, pod: str) -> str:
    found = get(kube, namespace, "pod", pod)
    assert found is not None
    return str(found["metadata"]["resourceVersion"])


def heartbeat(broker_url: str, app_name: str, pod: dict[str, Any], *, busy: int, idle: int = 1) -> None:
    """Write the heartbeat a worker in ``pod`` sends while ``busy`` of its children run a task."""
    meta = pod["metadata"]
    now = time.time()
    children = tuple(ChildState(slot=i, pid=100 + i, task_id=f"{meta['name']}-t{i}", task="tests.slow", since=now)
                     for i in range(busy))
    children += tuple(ChildState(slot=busy + i, pid=200 + i) for i in range(idle))
    record = WorkerRecord(
        id=f"{meta['name']}:1", app=app_name, hostname=meta["name"], pid=1, queues=("work",),
        concurrency=busy + idle, version="test", started_at=now, sent_at=now, children=children,
        pod=PodInfo(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"]),
    )
    broker = connect(BrokerSettings(url=broker_url))
    store = connect_fleet_store(broker, namespace=app_name)
    try:
        store.heartbeat(record.id, record.to_json(), ttl_s=HEARTBEAT_TTL_S)
    finally:
        store.close()
        broker.close()
