"""The Helm chart as the real helm renders it (offline: lint, template, values schema) and the files generated from
it: the CRD copy and the plain manifests for people without Helm."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.chart import (
    CHART,
    CI_VALUES,
    MANIFESTS,
    MANIFESTS_NAMESPACE,
    MANIFESTS_RELEASE,
    Helm,
)

pytestmark = pytest.mark.e2e

AGGREGATE_LABEL_PREFIX = "rbac.authorization.k8s.io/aggregate-to-"


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_helm_lint_strict_passes_for_every_ci_scenario(offline_helm: Helm, values: Path) -> None:
    linted = offline_helm.run("lint", "--strict", str(CHART), "-f", str(values))

    assert "1 chart(s) linted, 0 chart(s) failed" in linted.stdout


def test_a_bad_values_file_is_rejected_naming_each_field_and_rule(offline_helm: Helm, tmp_path: Path) -> None:
    bad = tmp_path / "bad-values.yaml"
    bad.write_text("operator: {logLevel: verbose, livenessPort: 0}\nwatchNamespace: [shop]\n"
                   "image: {pullPolicy: Sometimes}\n", encoding="utf-8")

    rendered = offline_helm.run("template", "t", str(CHART), "-f", str(bad), check=False)

    assert rendered.returncode != 0
    for message in ("at '/operator/logLevel': value must be one of 'debug', 'info', 'warning', 'error'",
                    "at '/operator/livenessPort': minimum: got 0, want 1",
                    "at '/image/pullPolicy': value must be one of 'IfNotPresent', 'Always', 'Never'",
                    "additional properties 'watchNamespace' not allowed"):
        assert message in rendered.stderr


def test_the_operator_runs_one_locked_down_replica_that_never_overlaps_itself(offline_helm: Helm) -> None:
    docs = offline_helm.template()
    (deployment,) = by_kind(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]

    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert container["args"][:2] == ["operator", "--all-namespaces"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    assert not by_kind(docs, "PodDisruptionBudget"), "the PodDisruptionBudget is opt-in"


def aggregated(role: dict[str, Any]) -> bool:
    """A ClusterRole for users, aggregated into the built-in admin/edit/view roles (not the operator's)."""
    return any(label.startswith(AGGREGATE_LABEL_PREFIX) for label in role["metadata"].get("labels") or {})


def operator_roles(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [role for role in by_kind(docs, kind) if not aggregated(role)]

@pytest.mark.parametrize("values", [["--set", "operator.replicas=2"],
                                    ["--set", "operator.leaderElection.enabled=true"]], ids=["two-replicas", "one"])
def test_leader_election_adds_the_lease_flag_a_rolling_update_and_a_role_on_one_lease_in_the_release_namespace(
    offline_helm: Helm, values: list[str]
) -> None:
    docs = offline_helm.template(*values, "--set", "watchNamespaces={shop}")
    (deployment,) = by_kind(docs, "Deployment")
    lease_role = next(r for r in by_kind(docs, "Role") if r["metadata"]["name"].endswith("-leader-election"))
    binding = next(b for b in by_kind(docs, "RoleBinding") if b["metadata"]["name"].endswith("-leader-election"))
    fullname = deployment["metadata"]["name"]
    namespace = deployment["metadata"]["namespace"]

    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert f"--leader-elect={namespace}/{fullname}" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert lease_role["metadata"]["namespace"] == namespace
    assert lease_role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": [fullname],
         "verbs": ["get", "update"]},
    ]
    assert binding["metadata"]["namespace"] == namespace
    assert binding["roleRef"]["name"] == lease_role["metadata"]["name"]


def test_without_leader_election_there_is_no_lease_role_and_no_lease_flag(offline_helm: Helm) -> None:
    docs = offline_helm.template()
    (deployment,) = by_kind(docs, "Deployment")

    assert not any(r["metadata"]["name"].endswith("-leader-election") for r in by_kind(docs, "Role"))
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not any(a.startswith("--leader-elect") for a in args)


def test_rbac_rules_name_every_verb_and_resource_and_never_delete(offline_helm: Helm) -> None:
    for values in ([], ["--set", "watchNamespaces={shop,billing}"]):
        docs = offline_helm.template(*values)
        roles = operator_roles(docs, "ClusterRole") + by_kind(docs, "Role")
        assert roles
        for role in roles:
            for rule in role["rules"]:
                assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
                assert not {"delete", "deletecollection", "escalate", "bind", "impersonate"} & set(rule["verbs"])
                if "secrets" in rule["resources"]:
                    assert rule["verbs"] == ["get", "watch"], "reads the Secrets TaskQueues name; never lists them"


def test_namespaced_mode_grants_roles_in_the_watched_namespaces_and_nothing_cluster_wide(offline_helm: Helm) -> None:
    docs = offline_helm.template("--set", "watchNamespaces={shop,billing}")
    (deployment,) = by_kind(docs, "Deployment")

    assert not operator_roles(docs, "ClusterRole")
    assert not by_kind(docs, "ClusterRoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in by_kind(docs, "Role")) == ["billing", "shop"]
    assert sorted(b["metadata"]["namespace"] for b in by_kind(docs, "RoleBinding")) == ["billing", "shop"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=shop" in args
    assert "--namespace=billing" in args
    assert "--all-namespaces" not in args


def test_task_queue_permissions_are_aggregated_into_the_built_in_roles_unless_turned_off(offline_helm: Helm) -> None:
    docs = offline_helm.template("--set", "watchNamespaces={shop}")
    roles = {role["metadata"]["name"]: role for role in by_kind(docs, "ClusterRole") if aggregated(role)}
    edit, view = roles["taskfleet-edit"], roles["taskfleet-view"]

    assert {k: v for k, v in edit["metadata"]["labels"].items() if k.startswith(AGGREGATE_LABEL_PREFIX)} == {
        "rbac.authorization.k8s.io/aggregate-to-admin": "true", "rbac.authorization.k8s.io/aggregate-to-edit": "true"}
    assert {k: v for k, v in view["metadata"]["labels"].items() if k.startswith(AGGREGATE_LABEL_PREFIX)} == {
        "rbac.authorization.k8s.io/aggregate-to-view": "true"}
    assert {verb for rule in view["rules"] for verb in rule["verbs"]} == {"get", "list", "watch"}
    status_rules = [rule for rule in edit["rules"] if "taskqueues/status" in rule["resources"]]
    assert [rule["verbs"] for rule in status_rules] == [["get"]], "the status is the operator's to write"
    assert not [r for r in by_kind(offline_helm.template("--set", "rbac.aggregateToDefaultRoles=false"),
                                   "ClusterRole") if aggregated(r)]


def test_a_service_monitor_is_rendered_only_where_the_prometheus_operator_api_exists(offline_helm: Helm) -> None:
    wanted = ["--set", "metrics.serviceMonitor.enabled=true"]

    without = offline_helm.run("template", "t", str(CHART), *wanted).stdout
    with_api = offline_helm.template(*wanted, "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor")

    assert "kind: ServiceMonitor" not in without
    (monitor,) = by_kind(with_api, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


def test_dev_brokers_and_task_queues_from_values_render_with_the_release_names(offline_helm: Helm) -> None:
    docs = offline_helm.template("-f", str(CHART / "ci" / "taskqueue-values.yaml"), release="shop")
    (secret,) = by_kind(docs, "Secret")
    (task_queue,) = by_kind(docs, "TaskQueue")

    assert secret["metadata"]["name"] == "shop-taskfleet-dev-brokers"
    assert secret["stringData"]["redis-url"] == "redis://shop-taskfleet-redis.taskfleet.svc:6379/0"
    assert task_queue["spec"]["broker"]["urlFrom"]["secretKeyRef"]["name"] == "shop-taskfleet-dev-brokers"
    assert task_queue["metadata"]["labels"]["team"] == "growth"


def test_deploy_manifests_are_the_chart_rendered_with_defaults(offline_helm: Helm) -> None:
    rendered = offline_helm.run("template", MANIFESTS_RELEASE, str(CHART), "--namespace", MANIFESTS_NAMESPACE,
                                "--include-crds", "--skip-tests").stdout
    committed = MANIFESTS.read_text(encoding="utf-8")

    assert committed.split("\n", 3)[3] == rendered, (
        f"{MANIFESTS.relative_to(CHART.parents[1])} is stale: run `make manifests`")


def test_pod_deletion_cost_is_on_by_default_with_pods_list_and_patch_and_a_value_turns_both_off(
    offline_helm: Helm,
) -> None:
    def rendered(*values: str) -> tuple[list[Any], list[str]]:
        docs = offline_helm.template(*values)
        (deployment,) = by_kind(docs, "Deployment")
        rules = [rule for role in by_kind(docs, "ClusterRole") for rule in role["rules"] if "pods" in rule["resources"]]
        return rules, deployment["spec"]["template"]["spec"]["containers"][0]["args"]

    rules_on, args_on = rendered()
    rules_off, args_off = rendered("--set", "operator.podDeletionCost.enabled=false")

    assert any(rule["verbs"] == ["list", "patch"] for rule in rules_on)
    assert "--no-pod-deletion-cost" not in args_on
    assert not any("patch" in rule["verbs"] for rule in rules_off)
    assert "--no-pod-deletion-cost" in args_off
