"""The operator reads Deployments and Secrets from watches (operator/cache.py), yet sees every change within a
poll or two: a deleted Deployment comes back, a missing Secret is reported, a changed Secret is used. With the
chart's RBAC in both modes (the ``operator`` fixture), so the watch permissions it grants are enough."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.support.k8s import ControlPlane
from tests.support.operator import (
    OperatorProcess,
    apply,
    condition,
    create_broker_secret,
    get,
    replicas,
    task_queue,
    wait_replicas,
)
from tests.support.servers import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

POLL_S = 1
#: Two polls, plus kubectl round trips and the status write.
WITHIN_TWO_POLLS_S = 2 * POLL_S + 1.5


def reachable(kube: ControlPlane, namespace: str, name: str) -> dict[str, object]:
    return condition(get(kube, namespace, "taskqueue", name), "BrokerReachable")


def seconds_until(check: Callable[[], object], timeout: float, message: str) -> float:
    started = time.monotonic()
    wait_for(check, timeout, interval=0.1, message=message)
    return time.monotonic() - started


def test_a_deleted_worker_deployment_is_back_within_two_polls(
    crd: ControlPlane, namespace: str, operator: OperatorProcess, redis_url: str
) -> None:
    create_broker_secret(crd, namespace, redis_url)
    apply(crd, namespace, task_queue("reports", queues=["reports"],
                                     autoscaling={"minReplicas": 1, "pollIntervalSeconds": POLL_S}))
    wait_replicas(crd, namespace, "reports-worker", 1, timeout=15)

    crd.kubectl("delete", "deployment", "reports-worker", "-n", namespace)
    took = seconds_until(lambda: replicas(crd, namespace, "reports-worker") is not None, 15,
                         f"the Deployment was not recreated:\n{operator.log_text()[-2000:]}")

    assert took < WITHIN_TWO_POLLS_S


def test_a_missing_then_created_then_changed_secret_is_seen_within_two_polls_each(
    crd: ControlPlane, namespace: str, operator: OperatorProcess, redis_url: str
) -> None:
    # Given a TaskQueue whose Secret does not exist yet
    apply(crd, namespace, task_queue("invoices", queues=["invoices"], secret="invoices-broker",
                                     autoscaling={"pollIntervalSeconds": POLL_S}))
    wait_for(lambda: reachable(crd, namespace, "invoices").get("reason") == "SecretMissing", 15, interval=0.1,
             message=f"SecretMissing never reported: {reachable(crd, namespace, 'invoices')}")

    # When the Secret is created, the broker is read within two polls
    create_broker_secret(crd, namespace, redis_url, name="invoices-broker")
    took = seconds_until(lambda: reachable(crd, namespace, "invoices").get("status") == "True", 15,
                         "the new Secret was not used")
    assert took < WITHIN_TWO_POLLS_S

    # When its value changes to a dead broker, the change is used within two polls
    dead = f"redis://127.0.0.1:{free_port()}/0"
    patched = crd.kubectl("create", "secret", "generic", "invoices-broker", "-n", namespace,
                          f"--from-literal=url={dead}", "--dry-run=client", "-o", "yaml").stdout
    crd.kubectl("apply", "-n", namespace, "-f", "-", input=patched)
    took = seconds_until(lambda: reachable(crd, namespace, "invoices").get("reason") == "Unreachable", 15,
                         f"the changed Secret was not used: {reachable(crd, namespace, 'invoices')}")
    assert took < WITHIN_TWO_POLLS_S

    # When the Secret is deleted, that is reported within two polls
    crd.kubectl("delete", "secret", "invoices-broker", "-n", namespace)
    took = seconds_until(lambda: reachable(crd, namespace, "invoices").get("reason") == "SecretMissing", 15,
                         f"the deleted Secret was not noticed: {reachable(crd, namespace, 'invoices')}")
    assert took < WITHIN_TWO_POLLS_S
