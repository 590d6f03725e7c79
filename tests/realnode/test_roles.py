"""User roles on a real node: the chart's TaskQueue permissions reach the built-in `edit` and `view` ClusterRoles
through the real kube-controller-manager's ClusterRole aggregation (envtest has no controller manager, so
tests/e2e/test_chart_roles.py can only imitate that step)."""

from __future__ import annotations

import pytest

from tests.realnode.cluster import RealNode
from tests.realnode.conftest import Release

pytestmark = pytest.mark.timeout(120)


def can(cluster: RealNode, user: str, verb: str, resource: str, namespace: str) -> bool:
    """`kubectl auth can-i` as ``user`` (impersonated by the admin kubeconfig)."""
    result = cluster.kubectl("auth", "can-i", verb, resource, "-n", namespace, "--as", user, check=False)
    return result.stdout.strip() == "yes"


def test_a_namespace_user_bound_to_edit_manages_taskqueues_and_one_bound_to_view_only_reads_them(
    cluster: RealNode, chart: Release, namespace: str
) -> None:
    # Given the chart installed with its defaults (rbac.aggregateToDefaultRoles: true), and two namespace users
    cluster.kubectl("-n", namespace, "create", "rolebinding", "alice-edit", "--clusterrole=edit", "--user=alice")
    cluster.kubectl("-n", namespace, "create", "rolebinding", "bob-view", "--clusterrole=view", "--user=bob")
    resource = "taskqueues.taskfleet.io"
    # Then the controller manager has aggregated TaskQueues into edit: alice creates, scales and deletes them
    cluster.wait_until("edit aggregates taskqueues", lambda: can(cluster, "alice", "create", resource, namespace),
                       timeout=60)
    assert can(cluster, "alice", "delete", resource, namespace)
    assert can(cluster, "alice", "patch", f"{resource}/scale", namespace)
    # And into view: bob reads them and changes nothing
    cluster.wait_until("view aggregates taskqueues", lambda: can(cluster, "bob", "list", resource, namespace),
                       timeout=60)
    assert can(cluster, "bob", "get", resource, namespace)
    assert not can(cluster, "bob", "create", resource, namespace)
    assert not can(cluster, "bob", "delete", resource, namespace)
    # And neither reaches another namespace
    assert not can(cluster, "alice", "create", resource, chart.namespace)
    assert not can(cluster, "bob", "list", resource, chart.namespace)
