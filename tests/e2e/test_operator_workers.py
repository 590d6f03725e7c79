"""The WORKERS column and the WorkersReady condition against a real kube-apiserver: worker pods that are not ready
show as ``ready/desired`` in ``kubectl get taskqueues``, with the reason a pod gives (an image that cannot be pulled,
a crash loop), and the condition turns True once they are all ready.

There is no kubelet: the tests create the worker pods and write their status (and the Deployment's readyReplicas)
through the status subresources, as a kubelet and the Deployment controller would. The operator reads them with
the chart's RBAC (``pods: list``), in both RBAC modes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.k8s import ControlPlane
from tests.support.operator import OperatorProcess, apply, condition, create_broker_secret, get, task_queue
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

STATUS_TIMEOUT_S = 15.0
IMAGE = "ghcr.io/taskfleet/worker:typo"


def create_pod(kube: ControlPlane, namespace: str, name: str, labels: dict[str, str]) -> None:
    """A pod of the worker Deployment (its labels), with no token mounted: no controller makes ServiceAccounts here."""
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
        "spec": {"automountServiceAccountToken": False, "containers": [{"name": "worker", "image": IMAGE}]},
    }))


def write_pod_status(kube: ControlPlane, namespace: str, name: str, *, ready: bool,
                     waiting: tuple[str, str] | None = None) -> None:
    """Write the status a kubelet would: Ready, or a container waiting with ``(reason, message)``."""
    state: dict[str, Any] = {"running": {"startedAt": "2026-12-04T08:00:00Z"}} if waiting is None else {
        "waiting": {"reason": waiting[0], "message": waiting[1]}}
    status = {
        "phase": "Running" if waiting is None or waiting[0] == "CrashLoopBackOff" else "Pending",
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"},
                       {"type": "PodScheduled", "status": "True"}],
        "containerStatuses": [{"name": "worker", "image": IMAGE, "imageID": "", "ready": ready, "restartCount": 0,
                               "state": state}],
    }
    kube.kubectl("patch", "pod", name, "-n", namespace, "--subresource=status", "--type=merge",
                 "-p", json.dumps({"status": status}))


def write_ready_replicas(kube: ControlPlane, namespace: str, deployment: str, ready: int) -> None:
    """What the Deployment controller would report."""
    kube.kubectl("patch", "deployment", deployment, "-n", namespace, "--subresource=status", "--type=merge",
                 "-p", json.dumps({"status": {"replicas": 2, "readyReplicas": ready}}))


def workers_column(kube: ControlPlane, namespace: str, name: str) -> tuple[str, str]:
    """(WORKERS, WORKERS-REASON) as ``kubectl get tq -o wide`` prints them."""
    header, row = kube.kubectl("get", "tq", name, "-n", namespace, "-o", "wide").stdout.splitlines()[:2]
    cells = dict(zip(header.split(), row.split(), strict=False))
    return cells.get("WORKERS", ""), cells.get("WORKERS-REASON", "")


def test_worker_pods_that_are_not_ready_show_in_kubectl_get_with_the_reason_a_pod_gives(
    crd: ControlPlane, namespace: str, operator: OperatorProcess, redis_url: str
) -> None:
    # Given a TaskQueue pinned at 2 workers, one pod ready and one whose image cannot be pulled
    create_broker_secret(crd, namespace, redis_url)
    apply(crd, namespace, task_queue("mail", queues=["mail"], replicas=2,
                                     autoscaling={"enabled": False, "pollIntervalSeconds": 1}))
    wait_for(lambda: get(crd, namespace, "deployment", "mail-worker"), STATUS_TIMEOUT_S, interval=0.2,
             message="the operator never created the worker Deployment")
    deployment = get(crd, namespace, "deployment", "mail-worker")
    assert deployment is not None
    labels = deployment["spec"]["selector"]["matchLabels"]
    for pod in ("mail-worker-a", "mail-worker-b"):
        create_pod(crd, namespace, pod, labels)
    write_pod_status(crd, namespace, "mail-worker-a", ready=True)
    write_pod_status(crd, namespace, "mail-worker-b", ready=False,
                     waiting=("ImagePullBackOff", f'Back-off pulling image "{IMAGE}"'))
    write_ready_replicas(crd, namespace, "mail-worker", 1)

    # Then kubectl shows 1/2 and why
    wait_for(lambda: workers_column(crd, namespace, "mail") == ("1/2", "ImagePullBackOff"), STATUS_TIMEOUT_S,
             interval=0.2, message=f"never 1/2 ImagePullBackOff: {workers_column(crd, namespace, 'mail')}\n"
                                   f"{operator.log_text()[-2000:]}")
    workers_ready = condition(get(crd, namespace, "taskqueue", "mail"), "WorkersReady")
    assert workers_ready["status"] == "False"
    assert workers_ready["message"] == (f"1/2 worker pods ready; pod mail-worker-b container worker: "
                                        f'ImagePullBackOff: Back-off pulling image "{IMAGE}"')

    # When the image is fixed but the worker crashes, the reason follows
    write_pod_status(crd, namespace, "mail-worker-b", ready=False,
                     waiting=("CrashLoopBackOff", "back-off 10s restarting failed container=worker"))
    wait_for(lambda: workers_column(crd, namespace, "mail") == ("1/2", "CrashLoopBackOff"), STATUS_TIMEOUT_S,
             interval=0.2, message=f"never CrashLoopBackOff: {workers_column(crd, namespace, 'mail')}")

    # And once both pods are ready, the condition is True
    write_pod_status(crd, namespace, "mail-worker-b", ready=True)
    write_ready_replicas(crd, namespace, "mail-worker", 2)
    wait_for(lambda: workers_column(crd, namespace, "mail") == ("2/2", "AllReady"), STATUS_TIMEOUT_S,
             interval=0.2, message=f"never 2/2: {workers_column(crd, namespace, 'mail')}")
    assert condition(get(crd, namespace, "taskqueue", "mail"), "WorkersReady")["status"] == "True"
