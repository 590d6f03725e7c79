"""Scale-in that spares busy pods, against a real kube-apiserver and a real Redis fleet store, with the chart's
operator and RBAC (both modes): before lowering replicas the operator annotates the pods whose workers report
running tasks, writes only the annotations that must change, and only when it scales in.

There is no kubelet or ReplicaSet controller here: the worker pods are API objects created by the test with the
Deployment's labels, and their workers' heartbeats are written to the app's fleet store as real workers write them.
Which pod a ReplicaSet then deletes is proven with real pods in the realnode tier.
"""

from __future__ import annotations

import time

import pytest

from tests.support.k8s import ControlPlane
from tests.support.operator import (
    OperatorProcess,
    apply,
    condition,
    create_broker_secret,
    get,
    task_queue,
    wait_replicas,
)
from tests.support.scale_in import create_worker_pod, deletion_cost, heartbeat, resource_version
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

CONDITION = "ScaleInSparesBusyPods"
#: Polls the test lets pass to show that a steady TaskQueue writes nothing to its pods (poll interval 1 s).
STEADY_S = 3.0


def scale_to(kube: ControlPlane, namespace: str, app_name: str, replicas: int) -> None:
    apply(kube, namespace, task_queue("work", queues=["work"], worker={"appName": app_name}, replicas=replicas,
                                      autoscaling={"enabled": False, "pollIntervalSeconds": 1}))
    wait_replicas(kube, namespace, "work-worker", replicas, 15)


def reason(kube: ControlPlane, namespace: str) -> str | None:
    return condition(get(kube, namespace, "taskqueue", "work"), CONDITION).get("reason")


def test_before_a_scale_in_only_busy_pods_get_a_deletion_cost_and_nothing_is_written_twice(
    crd: ControlPlane, namespace: str, operator: OperatorProcess, redis_url: str
) -> None:
    app_name = f"shop-{namespace}"
    create_broker_secret(crd, namespace, redis_url)
    scale_to(crd, namespace, app_name, 3)
    pods = {name: create_worker_pod(crd, namespace, "work", name) for name in ("work-a", "work-b", "work-c")}
    heartbeat(redis_url, app_name, pods["work-a"], busy=0)
    heartbeat(redis_url, app_name, pods["work-b"], busy=2)
    heartbeat(redis_url, app_name, pods["work-c"], busy=0, idle=2)

    # Given a TaskQueue that does not scale in: its pods are left alone, however often it is polled
    wait_for(lambda: reason(crd, namespace) == "Enabled", 10, interval=0.2,
             message=f"no {CONDITION} condition:\n{operator.log_text()[-2000:]}")
    time.sleep(STEADY_S)
    before = {name: resource_version(crd, namespace, name) for name in pods}
    assert [deletion_cost(crd, namespace, name) for name in pods] == [None, None, None]

    # When it scales in from 3 to 1
    scale_to(crd, namespace, app_name, 1)

    # Then the busy pod costs its running tasks, the idle ones were not touched, and the condition says so
    assert [deletion_cost(crd, namespace, name) for name in pods] == [None, "2", None]
    assert resource_version(crd, namespace, "work-a") == before["work-a"]
    assert resource_version(crd, namespace, "work-c") == before["work-c"]
    wait_for(lambda: reason(crd, namespace) == "BusyPodsSpared", 10, interval=0.2,
             message=f"condition: {condition(get(crd, namespace, 'taskqueue', 'work'), CONDITION)}")
    said = condition(get(crd, namespace, "taskqueue", "work"), CONDITION)
    assert said["status"] == "True"
    assert "before scaling from 3 to 1: 1 busy pod(s) made costlier to delete than 2 idle" in said["message"]

    # And a second scale-in with the same busy pod writes nothing; scaling out writes nothing either
    spared = resource_version(crd, namespace, "work-b")
    scale_to(crd, namespace, app_name, 2)
    scale_to(crd, namespace, app_name, 1)
    assert resource_version(crd, namespace, "work-b") == spared

    # And when the work moves, so do the costs: the pod gone idle loses its annotation
    heartbeat(redis_url, app_name, pods["work-b"], busy=0)
    heartbeat(redis_url, app_name, pods["work-c"], busy=1)
    scale_to(crd, namespace, app_name, 2)
    scale_to(crd, namespace, app_name, 1)
    assert [deletion_cost(crd, namespace, name) for name in pods] == [None, None, "1"]
    assert resource_version(crd, namespace, "work-a") == before["work-a"]


def test_a_task_queue_without_an_app_name_scales_in_as_before_and_says_why_busy_pods_are_not_spared(
    crd: ControlPlane, namespace: str, operator: OperatorProcess, redis_url: str
) -> None:
    create_broker_secret(crd, namespace, redis_url)
    apply(crd, namespace, task_queue("work", queues=["work"], replicas=2,
                                     autoscaling={"enabled": False, "pollIntervalSeconds": 1}))
    wait_replicas(crd, namespace, "work-worker", 2, 15)
    create_worker_pod(crd, namespace, "work", "work-a")

    apply(crd, namespace, task_queue("work", queues=["work"], replicas=1,
                                     autoscaling={"enabled": False, "pollIntervalSeconds": 1}))

    wait_replicas(crd, namespace, "work-worker", 1, 15)
    wait_for(lambda: reason(crd, namespace) == "AppNameUnset", 10, interval=0.2, message="no AppNameUnset condition")
    assert condition(get(crd, namespace, "taskqueue", "work"), CONDITION)["status"] == "False"
    assert deletion_cost(crd, namespace, "work-a") is None
