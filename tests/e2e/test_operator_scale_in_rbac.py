"""Scale-in without the RBAC for pods: with the chart's ``operator.podDeletionCost.enabled=false`` the operator is
told not to try (condition ``Disabled``); an operator that tries without the permission is refused (``Forbidden``).
Either way it scales in as before: annotating pods is best effort and never blocks scaling.

A module of its own: its operators serve their own namespaces and must not overlap the module-scoped ``operator``
fixture of the other operator tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.chart import Helm, operator_container, service_account_kubeconfig
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
from tests.support.scale_in import create_worker_pod, deletion_cost, heartbeat
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

CONDITION = "ScaleInSparesBusyPods"


class Release:
    """The chart installed with ``podDeletionCost.enabled=false``, watching one namespace per scenario."""

    def __init__(self, args: list[str], kubeconfig: Path, namespaces: dict[str, str]) -> None:
        self.args, self.kubeconfig, self.namespaces = args, kubeconfig, namespaces


@pytest.fixture(scope="module")
def release(crd: ControlPlane, helm: Helm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    namespaces = {scenario: crd.create_namespace(scenario.lower()) for scenario in ("Disabled", "Forbidden")}
    release_namespace = crd.create_namespace("taskfleet")
    helm.install("op-no-pods", release_namespace, values={
        "watchNamespaces": list(namespaces.values()), "operator": {"podDeletionCost": {"enabled": False}},
    })
    fullname = "op-no-pods-taskfleet"
    args = list(operator_container(crd, release_namespace, fullname)["args"])
    kubeconfig = service_account_kubeconfig(crd, release_namespace, fullname,
                                            tmp_path_factory.mktemp("sa") / "kubeconfig")
    yield Release(args, kubeconfig, namespaces)
    helm.run("uninstall", "op-no-pods", "--namespace", release_namespace)


@pytest.mark.parametrize("scenario", ["Disabled", "Forbidden"])
def test_without_rbac_on_pods_a_scale_in_happens_as_before_and_the_condition_says_why_busy_pods_are_not_spared(
    crd: ControlPlane, release: Release, redis_url: str, scenario: str
) -> None:
    namespace = release.namespaces[scenario]
    others = {f"--namespace={ns}" for ns in release.namespaces.values() if ns != namespace}
    # Forbidden: an operator that was not told the chart withheld the permission (e.g. RBAC managed elsewhere).
    dropped = others | ({"--no-pod-deletion-cost"} if scenario == "Forbidden" else set())
    assert "--no-pod-deletion-cost" in release.args, "the chart's value turns the flag on"
    operator = OperatorProcess(crd, args=[a for a in release.args if a not in dropped],
                               kubeconfig=release.kubeconfig).wait_ready()
    try:
        create_broker_secret(crd, namespace, redis_url)
        spec = {"worker": {"appName": "shop"}, "autoscaling": {"enabled": False, "pollIntervalSeconds": 1}}
        apply(crd, namespace, task_queue("work", queues=["work"], replicas=2, **spec))
        wait_replicas(crd, namespace, "work-worker", 2, 15)
        pod = create_worker_pod(crd, namespace, "work", "work-a")
        heartbeat(redis_url, "shop", pod, busy=1)

        apply(crd, namespace, task_queue("work", queues=["work"], replicas=1, **spec))

        def said() -> dict[str, str]:
            return {k: str(v) for k, v in condition(get(crd, namespace, "taskqueue", "work"), CONDITION).items()}

        wait_for(lambda: said().get("reason") == scenario, 15, interval=0.2,
                 message=f"condition {said()}:\n{operator.log_text()[-2000:]}")
        wait_replicas(crd, namespace, "work-worker", 1, 15)  # scaled in anyway
        assert said()["status"] == "False"
        assert deletion_cost(crd, namespace, "work-a") is None
    finally:
        operator.stop()
