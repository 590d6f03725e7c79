"""The WORKERS column and the WorkersReady condition: ready worker pods over those asked for, and the worst reason
any pod gives for not being ready, quoted from the kubelet or the scheduler, so a broken worker image is visible in
``kubectl get taskqueues``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from taskfleet.operator.resources import parse_task_queue
from taskfleet.operator.scaling import Decision, Load
from taskfleet.operator.status import Observation, polled_status
from taskfleet.operator.worker_pods import workers_column, workers_verdict


def pod(name: str, *, phase: str = "Running", ready: bool = False, waiting: tuple[str, str] | None = None,
        last_exit: dict[str, Any] | None = None, unschedulable: str | None = None, init: bool = False,
        deleting: bool = False) -> dict[str, Any]:
    """A pod as the API server returns it, with one container ``worker`` (or an init container)."""
    container: dict[str, Any] = {"name": "worker", "ready": ready, "state": {"running": {}}}
    if waiting is not None:
        container["state"] = {"waiting": {"reason": waiting[0], "message": waiting[1]}}
    if last_exit is not None:
        container["lastState"] = {"terminated": last_exit}
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    if unschedulable is not None:
        conditions.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                           "message": unschedulable})
    metadata: dict[str, Any] = {"name": name}
    if deleting:
        metadata["deletionTimestamp"] = "2026-12-04T08:00:00Z"
    return {"metadata": metadata, "status": {"phase": phase, "conditions": conditions,
                                             "initContainerStatuses" if init else "containerStatuses": [container]}}


READY = pod("w-ok", ready=True)
PULL = pod("w-pull", phase="Pending", waiting=("ImagePullBackOff", 'Back-off pulling image "shop/worker:typo"'))
CRASH = pod("w-crash", waiting=("CrashLoopBackOff", "back-off 40s restarting failed container=worker"),
            last_exit={"exitCode": 78, "reason": "Error"})
CONFIG = pod("w-config", phase="Pending",
             waiting=("CreateContainerConfigError", 'secret "broker" not found'))
UNSCHEDULABLE = pod("w-big", phase="Pending", unschedulable="0/1 nodes are available: 1 Insufficient cpu.")
CREATING = pod("w-new", phase="Pending", waiting=("ContainerCreating", ""))
PROBE = pod("w-probe")


def test_the_workers_column_is_ready_over_desired() -> None:
    assert workers_column(1, 3) == "1/3"


@pytest.mark.parametrize(
    ("ready", "desired", "pods", "reason", "message"),
    [
        pytest.param(3, 3, [], "AllReady", "3/3 worker pods ready", id="all-ready"),
        pytest.param(0, 0, [], "ScaledToZero", "no worker pods are wanted", id="scaled-to-zero"),
        pytest.param(1, 2, [READY, PULL], "ImagePullBackOff",
                     '1/2 worker pods ready; pod w-pull container worker: ImagePullBackOff: Back-off pulling image '
                     '"shop/worker:typo"', id="image-pull"),
        pytest.param(0, 1, [CRASH], "CrashLoopBackOff",
                     "0/1 worker pods ready; pod w-crash container worker: CrashLoopBackOff: last exited with code "
                     "78 (Error)", id="crash-loop-tells-the-exit-code"),
        pytest.param(0, 1, [CONFIG], "CreateContainerConfigError",
                     '0/1 worker pods ready; pod w-config container worker: CreateContainerConfigError: secret '
                     '"broker" not found', id="missing-secret"),
        pytest.param(0, 1, [UNSCHEDULABLE], "Unschedulable",
                     "0/1 worker pods ready; pod w-big: 0/1 nodes are available: 1 Insufficient cpu.",
                     id="unschedulable"),
        pytest.param(0, 1, [CREATING], "Pending", "0/1 worker pods ready; pod w-new is pending (ContainerCreating)",
                     id="pending"),
        pytest.param(0, 1, [PROBE], "NotReady", "0/1 worker pods ready; pod w-probe is running and not ready",
                     id="readiness-probe-failing"),
        pytest.param(1, 3, [READY], "Starting", "1/3 worker pods ready; 1 of 3 pods exist", id="pods-being-created"),
    ],
)
def test_the_condition_gives_the_reason_a_pod_is_not_ready(
    ready: int, desired: int, pods: list[dict[str, Any]], reason: str, message: str
) -> None:
    verdict = workers_verdict(ready, desired, pods)

    assert (verdict.ready, verdict.reason, verdict.message) == (ready >= desired, reason, message)


def test_the_worst_reason_wins_and_the_others_alike_are_counted() -> None:
    crash2 = {**CRASH, "metadata": {"name": "w-crash-2"}}

    verdict = workers_verdict(0, 4, [CREATING, CRASH, crash2, UNSCHEDULABLE])

    assert verdict.reason == "CrashLoopBackOff"
    assert verdict.message.endswith("(and 1 more pod(s) alike)")


def test_an_image_that_cannot_be_pulled_outranks_a_crash_loop() -> None:
    assert workers_verdict(0, 2, [CRASH, PULL]).reason == "ImagePullBackOff"


def test_a_broken_init_container_counts_like_the_worker_container() -> None:
    broken_init = pod("w-init", phase="Pending", waiting=("ErrImagePull", "manifest unknown"), init=True)

    assert workers_verdict(0, 1, [broken_init]).reason == "ErrImagePull"


def test_pods_being_deleted_give_no_reason() -> None:
    going = pod("w-old", deleting=True, waiting=("CrashLoopBackOff", ""))

    assert workers_verdict(0, 1, [going]).reason == "Starting"


def test_pods_that_cannot_be_listed_still_give_the_counts() -> None:
    verdict = workers_verdict(1, 2, None, pods_error="Kubernetes API 403 Forbidden")

    assert not verdict.ready
    assert verdict.message == "1/2 worker pods ready (cannot list the pods: Kubernetes API 403 Forbidden)"


def test_the_status_carries_the_workers_column_and_the_workers_ready_condition() -> None:
    tq = parse_task_queue({
        "metadata": {"name": "emails", "namespace": "shop", "uid": "u-1", "generation": 1},
        "spec": {"queues": ["emails"], "broker": {"url": "redis://redis:6379/0"},
                 "worker": {"image": "shop/worker:typo", "app": "shop.tasks:app"}},
    })
    seen = Observation(broker_type="redis", load=Load(30, 0), delayed=0, dead=0, broker_error=None,
                       broker_error_reason="Unreachable", deployment_error=None, replicas=3,
                       decision=Decision(3, "Stable", "3 replicas carry the load", 3), scaled=False,
                       ready_replicas=1, workers=workers_verdict(1, 3, [READY, PULL]))

    status = polled_status(tq, seen, previous={}, now=datetime(2026, 12, 4, tzinfo=UTC), selector="app=x")

    assert (status["workers"], status["readyReplicas"]) == ("1/3", 1)
    (workers_ready,) = [c for c in status["conditions"] if c["type"] == "WorkersReady"]
    assert (workers_ready["status"], workers_ready["reason"]) == ("False", "ImagePullBackOff")
