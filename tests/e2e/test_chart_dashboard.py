"""The chart's optional dashboard as the real helm renders it (offline): off by default; on, a locked-down
Deployment running ``taskfleet dashboard`` with its URLs and tokens from Secrets, a Service, its own ServiceAccount
and read-only RBAC on TaskQueues and Events (never Secrets). Reading with that RBAC against a real API server is
tests/e2e/test_dashboard_kube.py."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.chart import CHART, Helm

pytestmark = pytest.mark.e2e

DASHBOARD_VALUES = CHART / "ci" / "dashboard-values.yaml"
READ_RULES = [
    {"apiGroups": ["taskfleet.io"], "resources": ["taskqueues"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch"]},
]


def dashboard_docs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if (d["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "dashboard"]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [d for d in dashboard_docs(docs) if d["kind"] == kind]
    return found


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return found


def env(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e.get("valueFrom") or e.get("value") for e in container(docs)["env"]}


def test_the_dashboard_is_off_by_default_and_renders_nothing(offline_helm: Helm) -> None:
    docs = offline_helm.template()

    assert not dashboard_docs(docs)
    assert not [d for d in docs if "dashboard" in d["metadata"]["name"]]


def test_on_it_renders_a_deployment_a_service_a_service_account_and_its_own_role(offline_helm: Helm) -> None:
    docs = offline_helm.template("-f", str(DASHBOARD_VALUES), release="shop")

    assert sorted(d["kind"] for d in dashboard_docs(docs)) == [
        "ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount"]
    deployment, service = one(docs, "Deployment"), one(docs, "Service")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"] == "shop-taskfleet-dashboard"
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == one(docs, "ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "shop-taskfleet-dashboard",
                                    "namespace": "taskfleet"}]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_its_pods_never_match_the_operator_deployment_selector(offline_helm: Helm) -> None:
    docs = offline_helm.template("-f", str(DASHBOARD_VALUES))
    operator = next(d for d in docs if d["kind"] == "Deployment" and d not in dashboard_docs(docs))
    selector = operator["spec"]["selector"]["matchLabels"]
    labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]

    assert not all(labels.get(k) == v for k, v in selector.items())


def test_its_role_reads_task_queues_and_events_and_nothing_else(offline_helm: Helm) -> None:
    docs = offline_helm.template("-f", str(DASHBOARD_VALUES))

    assert one(docs, "ClusterRole")["rules"] == READ_RULES


def test_in_namespaced_mode_it_gets_a_role_in_each_watched_namespace_and_reads_only_those(offline_helm: Helm) -> None:
    docs = offline_helm.template("-f", str(DASHBOARD_VALUES), "--set", "watchNamespaces={shop,billing}")
    roles = [d for d in dashboard_docs(docs) if d["kind"] == "Role"]
    bindings = [d for d in dashboard_docs(docs) if d["kind"] == "RoleBinding"]

    assert not [d for d in dashboard_docs(docs) if d["kind"].startswith("Cluster")]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["billing", "shop"]
    assert all(r["rules"] == READ_RULES for r in roles)
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["billing", "shop"]
    args = container(docs)["args"]
    assert [a for a in args if a.startswith("--kube-")] == ["--kube-namespace=shop", "--kube-namespace=billing"]


def test_it_runs_taskfleet_dashboard_on_all_addresses_with_its_prefix_history_and_retention(
    offline_helm: Helm,
) -> None:
    docs = offline_helm.template("-f", str(DASHBOARD_VALUES))
    dashboard = container(docs)

    assert dashboard["args"] == [
        "dashboard", "--app-name=shop", "--host=0.0.0.0", "--port=5555", "--url-prefix=/taskfleet",
        "--history=/var/lib/taskfleet-dashboard/history.sqlite3", "--retention-days=14", "--kube-all-namespaces"]
    assert dashboard["ports"] == [{"name": "http", "containerPort": 5555, "protocol": "TCP"}]
    for probe in ("livenessProbe", "readinessProbe"):
        assert dashboard[probe]["httpGet"] == {"path": "/healthz", "port": "http"}


def test_broker_urls_and_tokens_come_from_secrets_by_env_and_never_appear_in_the_pod_spec(
    offline_helm: Helm,
) -> None:
    docs = offline_helm.template("-f", str(DASHBOARD_VALUES))

    assert env(docs) == {
        "TASKFLEET_BROKER_URL": {"secretKeyRef": {"name": "brokers", "key": "redis-url"}},
        "TASKFLEET_RESULT_BACKEND": {"secretKeyRef": {"name": "brokers", "key": "redis-results-url"}},
        "TASKFLEET_DASHBOARD_ADMIN_TOKEN": {"secretKeyRef": {"name": "dashboard-tokens", "key": "admin-token"}},
        "TASKFLEET_DASHBOARD_READ_TOKEN": {"secretKeyRef": {"name": "dashboard-tokens", "key": "read-token",
                                                            "optional": True}},
    }


def test_with_an_app_module_it_loads_the_app_and_may_take_the_broker_from_its_settings(offline_helm: Helm) -> None:
    docs = offline_helm.template("--set", "dashboard.enabled=true", "--set", "dashboard.app=shop.tasks:app",
                                 "--set", "dashboard.auth.existingSecret=tokens",
                                 "--set", "dashboard.image=registry.example.com/shop/worker:1")

    assert container(docs)["args"][:2] == ["dashboard", "--app=shop.tasks:app"]
    assert container(docs)["image"] == "registry.example.com/shop/worker:1"
    assert "TASKFLEET_BROKER_URL" not in env(docs)


def test_the_history_is_on_an_empty_dir_by_default_and_on_the_claim_when_one_is_named(offline_helm: Helm) -> None:
    def history_volume(*values: str) -> dict[str, Any]:
        docs = offline_helm.template("-f", str(DASHBOARD_VALUES), *values)
        pod = one(docs, "Deployment")["spec"]["template"]["spec"]
        mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert mounts["history"] == "/var/lib/taskfleet-dashboard"
        return next(v for v in pod["volumes"] if v["name"] == "history")

    assert history_volume() == {"name": "history", "persistentVolumeClaim": {"claimName": "dashboard-history"}}
    assert history_volume("--set", "dashboard.history.persistentVolumeClaim=") == {
        "name": "history", "emptyDir": {"sizeLimit": "1Gi"}}


def test_one_locked_down_replica_that_stops_before_its_successor_starts(offline_helm: Helm) -> None:
    docs = offline_helm.template("-f", str(DASHBOARD_VALUES))
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]

    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}, "one SQLite writer at a time"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container(docs)["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                                  "capabilities": {"drop": ["ALL"]}}
    assert container(docs)["resources"]["limits"]["memory"]


@pytest.mark.parametrize(("values", "message"), [
    (["--set", "dashboard.auth.existingSecret="], "set dashboard.auth.existingSecret"),
    (["--set", "dashboard.appName="], "set dashboard.app (module:attribute) or dashboard.appName"),
    (["--set", "dashboard.broker.urlFrom=null"], "set dashboard.broker.urlFrom (or broker.url)"),
    (["--set", "dashboard.broker.urlFrom=null", "--set", "dashboard.broker.url=redis://u:pw@redis:6379/0"],
     "at '/dashboard/broker/url'"),
])
def test_a_dashboard_without_tokens_an_app_or_a_broker_or_with_a_password_in_a_url_is_refused(
    offline_helm: Helm, values: list[str], message: str
) -> None:
    rendered = offline_helm.run("template", "t", str(CHART), "-f", str(DASHBOARD_VALUES), *values, check=False)

    assert rendered.returncode != 0
    assert message in rendered.stderr
