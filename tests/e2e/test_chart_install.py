"""`helm install`, `upgrade` and `uninstall` of the chart into a real kube-apiserver, and the chart's RBAC checked by
the API server's own authorizer: enough for the operator (the operator scenarios run with it, see conftest.py) and
no more.

No kubelet or controllers run here, so nothing uses `--wait`: Deployments are accepted objects, never Ready pods.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.chart import CI_VALUES, Helm, can_i, service_account_kubeconfig
from tests.support.k8s import ControlPlane
from tests.support.operator import get

pytestmark = pytest.mark.e2e

#: What a Prometheus Operator install would add: enough of the ServiceMonitor CRD for `.Capabilities` to see it.
SERVICE_MONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com", "scope": "Namespaced",
        "names": {"kind": "ServiceMonitor", "plural": "servicemonitors", "singular": "servicemonitor",
                  "listKind": "ServiceMonitorList"},
        "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
            "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}],
    },
}


#: A label selector for the operator's own ClusterRole, not the user roles the chart aggregates into the built-in
#: admin/edit/view roles (test_chart_roles.py).
NOT_AGGREGATED = "!rbac.authorization.k8s.io/aggregate-to-edit,!rbac.authorization.k8s.io/aggregate-to-view"
#: A label selector for everything but the optional dashboard's resources (test_chart_dashboard.py).
NOT_DASHBOARD = "app.kubernetes.io/component!=dashboard"


def names(kube: ControlPlane, kind: str, namespace: str | None = None, selector: str | None = None) -> list[str]:
    args = ["get", kind, "-o", "json"] + (["-n", namespace] if namespace else [])
    args += ["-l", selector] if selector else []
    return sorted(item["metadata"]["name"] for item in json.loads(kube.kubectl(*args).stdout)["items"])


def secret_data(kube: ControlPlane, namespace: str, name: str) -> dict[str, str]:
    secret: dict[str, Any] = get(kube, namespace, "secret", name) or {}
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


@pytest.fixture(scope="module")
def service_monitor_api(crd: ControlPlane) -> ControlPlane:
    crd.kubectl("apply", "-f", "-", input=json.dumps(SERVICE_MONITOR_CRD))
    crd.kubectl("wait", "--for=condition=Established", "--timeout=30s",
                "crd/servicemonitors.monitoring.coreos.com")
    return crd


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem.removesuffix("-values"))
def test_every_ci_scenario_installs_into_the_api_server(
    service_monitor_api: ControlPlane, helm: Helm, values: Path
) -> None:
    kube = service_monitor_api
    scenario = values.stem.removesuffix("-values")
    for watched in ("team-a", "team-b"):  # namespaced-values.yaml watches these; they must exist first
        if kube.kubectl("get", "namespace", watched, check=False).returncode != 0:
            kube.kubectl("create", "namespace", watched)
    namespace = kube.create_namespace("release")
    release = f"ci-{scenario}"

    installed = helm.install(release, namespace, "-f", str(values))

    assert "kubectl -n " + namespace + " get taskqueues --watch" in installed.stdout, "NOTES.txt: what to do next"
    fullname = f"{release}-taskfleet"
    assert fullname in names(kube, "deployment", namespace)
    assert fullname in names(kube, "serviceaccount", namespace)
    labelled = f"app.kubernetes.io/instance={release}"
    operator_role = f"{labelled},{NOT_AGGREGATED},{NOT_DASHBOARD}"
    if scenario == "namespaced":
        assert names(kube, "clusterrole", selector=operator_role) == []
        assert names(kube, "role", "team-a", labelled) == names(kube, "role", "team-b", labelled) == [fullname]
        assert names(kube, "poddisruptionbudget", namespace) == [fullname]
    else:
        assert names(kube, "clusterrole", selector=operator_role) == [fullname]
        assert names(kube, "clusterrolebinding", selector=f"{labelled},{NOT_DASHBOARD}") == [fullname]
    if scenario == "dashboard":
        dashboard = f"{fullname}-dashboard"
        for kind in ("deployment", "service", "serviceaccount"):
            assert dashboard in names(kube, kind, namespace), kind
        assert names(kube, "clusterrole", selector=f"{labelled},app.kubernetes.io/component=dashboard") == [dashboard]
        assert names(kube, "clusterrolebinding", selector=f"{labelled},app.kubernetes.io/component=dashboard") == [
            dashboard]
        assert f"port-forward svc/{dashboard}" in installed.stdout, "NOTES.txt: how to reach the dashboard"
    if scenario == "dev-brokers":
        urls = secret_data(kube, namespace, f"{fullname}-dev-brokers")
        assert urls["redis-url"] == f"redis://{fullname}-redis.{namespace}.svc:6379/0"
        assert urls["rabbitmq-url"].startswith(f"amqp://taskfleet:{urls['rabbitmq-password']}@{fullname}-rabbitmq.")
        assert len(urls["rabbitmq-password"]) == 24
        assert names(kube, "servicemonitor", namespace) == [fullname]
        assert urls["rabbitmq-password"] not in installed.stdout, "NOTES.txt must not print credentials"
    if scenario == "taskqueue":
        task_queue = get(kube, namespace, "taskqueue", "emails")
        assert task_queue is not None
        assert task_queue["spec"]["queues"] == ["emails", "emails-low"]
        assert task_queue["spec"]["autoscaling"]["pollIntervalSeconds"] == 5, "CRD defaults applied"


def test_upgrade_changes_mode_keeps_the_dev_password_and_uninstall_removes_all_but_the_crd(
    crd: ControlPlane, helm: Helm
) -> None:
    namespace, watched = crd.create_namespace("release"), crd.create_namespace("watched")
    release, fullname = "lifecycle", "lifecycle-taskfleet"
    labelled = f"app.kubernetes.io/instance={release}"
    operator_role = f"{labelled},{NOT_AGGREGATED},{NOT_DASHBOARD}"
    helm.install(release, namespace, values={"devBrokers": {"rabbitmq": {"enabled": True}}})
    password = secret_data(crd, namespace, f"{fullname}-dev-brokers")["rabbitmq-password"]
    assert names(crd, "clusterrole", selector=operator_role) == [fullname]

    helm.upgrade(release, namespace, values={
        "devBrokers": {"rabbitmq": {"enabled": True}}, "watchNamespaces": [watched],
        "operator": {"logLevel": "debug"},
    })

    args = (get(crd, namespace, "deployment", fullname) or {})["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--namespace={watched}" in args
    assert "--log-level=debug" in args
    assert "--all-namespaces" not in args
    assert names(crd, "clusterrole", selector=operator_role) == [], "cluster-wide RBAC removed on the switch"
    assert names(crd, "role", watched, labelled) == [fullname]
    assert secret_data(crd, namespace, f"{fullname}-dev-brokers")["rabbitmq-password"] == password

    helm.run("uninstall", release, "--namespace", namespace)

    for kind in ("deployment", "serviceaccount", "secret", "service"):
        assert names(crd, kind, namespace, labelled) == [], kind
    assert names(crd, "role", watched, labelled) == []
    assert names(crd, "clusterrole", selector=labelled) == [], "the aggregated user roles go too"
    assert crd.kubectl("get", "crd", "taskqueues.taskfleet.io", check=False).returncode == 0, (
        "helm never deletes CRDs (crds/): users' TaskQueues survive an uninstall")


@pytest.fixture(scope="module")
def namespaced_release(crd: ControlPlane, helm: Helm, tmp_path_factory: pytest.TempPathFactory
                       ) -> tuple[Path, str, str, str]:
    """The chart in namespaced mode; returns (the ServiceAccount's kubeconfig, release namespace, watched
    namespace, an unwatched namespace)."""
    namespace, watched, other = (crd.create_namespace(p) for p in ("release", "watched", "other"))
    helm.install("least", namespace, values={"watchNamespaces": [watched]})
    kubeconfig = service_account_kubeconfig(crd, namespace, "least-taskfleet",
                                            tmp_path_factory.mktemp("least") / "kubeconfig")
    return kubeconfig, namespace, watched, other


@pytest.mark.parametrize(
    ("verb", "resource", "subresource"),
    [
        ("watch", "taskqueues.taskfleet.io", None),
        ("patch", "taskqueues.taskfleet.io", "status"),
        ("create", "deployments.apps", None),
        ("patch", "deployments.apps", "scale"),
        ("get", "secrets", None),
        ("watch", "secrets", None),
        ("watch", "deployments.apps", None),
        ("create", "events", None),
    ],
)
def test_the_namespaced_operator_may_do_its_job_in_a_watched_namespace_only(
    crd: ControlPlane, namespaced_release: tuple[Path, str, str, str], verb: str, resource: str,
    subresource: str | None,
) -> None:
    kubeconfig, _, watched, other = namespaced_release

    assert can_i(crd, kubeconfig, verb, resource, namespace=watched, subresource=subresource)
    assert not can_i(crd, kubeconfig, verb, resource, namespace=other, subresource=subresource)
    assert not can_i(crd, kubeconfig, verb, resource, subresource=subresource), "nothing cluster-wide"


@pytest.mark.parametrize(
    ("verb", "resource", "subresource"),
    [
        ("list", "secrets", None),  # it reads the Secrets TaskQueues name, by name
        ("delete", "deployments.apps", None),  # worker Deployments go with their TaskQueue (garbage collection)
        ("patch", "deployments.apps", None),  # it scales through the scale subresource only
        ("delete", "taskqueues.taskfleet.io", None),
        ("update", "taskqueues.taskfleet.io", None),  # spec is the user's
        ("create", "pods", None),
        ("get", "configmaps", None),
        ("list", "namespaces", None),
        ("list", "customresourcedefinitions.apiextensions.k8s.io", None),
    ],
)
def test_the_operator_may_not_do_more_than_its_job_even_where_it_works(
    crd: ControlPlane, namespaced_release: tuple[Path, str, str, str], verb: str, resource: str,
    subresource: str | None,
) -> None:
    kubeconfig, namespace, watched, _ = namespaced_release

    assert not can_i(crd, kubeconfig, verb, resource, namespace=watched, subresource=subresource)
    assert not can_i(crd, kubeconfig, verb, resource, namespace=namespace, subresource=subresource)


def test_the_cluster_wide_operator_may_read_secrets_by_name_but_never_list_them(crd: ControlPlane, helm: Helm,
                                                                       tmp_path: Path) -> None:
    namespace, elsewhere = crd.create_namespace("release"), crd.create_namespace("elsewhere")
    helm.install("wide", namespace)
    kubeconfig = service_account_kubeconfig(crd, namespace, "wide-taskfleet", tmp_path / "kubeconfig")

    assert can_i(crd, kubeconfig, "get", "secrets", namespace=elsewhere), "a TaskQueue anywhere may name a Secret"
    assert can_i(crd, kubeconfig, "watch", "secrets", namespace=elsewhere), "one watch per named Secret"
    assert not can_i(crd, kubeconfig, "list", "secrets")
    assert not can_i(crd, kubeconfig, "delete", "deployments.apps")
    assert not can_i(crd, kubeconfig, "get", "nodes")
