"""The chart's user roles against a real kube-apiserver: TaskQueue permissions aggregated into the built-in
``edit`` and ``view`` ClusterRoles, so that a user bound to ``edit`` in a namespace can manage TaskQueues there and
one bound to ``view`` can only read them. The users are impersonated with the admin kubeconfig; the API server's
own RBAC authorizer answers.

envtest runs no kube-controller-manager, so no clusterrole-aggregation controller: ``aggregate`` does its job once
(every ClusterRole with an ``aggregationRule`` gets the rules of the ClusterRoles its selectors match, as the
controller writes them). What is tested is the chart's labels against the selectors of the built-in roles as this
API server bootstrapped them, and the rules those roles then grant.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.support.chart import Helm
from tests.support.k8s import ControlPlane
from tests.support.operator import task_queue

pytestmark = pytest.mark.e2e

EDITOR, VIEWER = "erin-editor", "victor-viewer"


def aggregate(kube: ControlPlane) -> None:
    """One pass of the clusterrole-aggregation controller, repeated until nothing changes (``edit`` aggregates
    ``view``, ``admin`` aggregates ``edit``)."""
    for _ in range(5):
        roles: list[dict[str, Any]] = json.loads(kube.kubectl("get", "clusterroles", "-o", "json").stdout)["items"]
        changed = False
        for role in roles:
            selectors = (role.get("aggregationRule") or {}).get("clusterRoleSelectors") or []
            if not selectors:
                continue
            rules: list[dict[str, Any]] = []
            for other in sorted(roles, key=lambda r: r["metadata"]["name"]):
                labels = other["metadata"].get("labels") or {}
                if other is not role and any(
                        all(labels.get(k) == v for k, v in (s.get("matchLabels") or {}).items()) for s in selectors):
                    rules += [rule for rule in other.get("rules") or [] if rule not in rules]
            if rules != (role.get("rules") or []):
                kube.kubectl("patch", "clusterrole", role["metadata"]["name"], "--type=merge",
                             "-p", json.dumps({"rules": rules}))
                changed = True
        if not changed:
            return
    raise AssertionError("ClusterRole aggregation did not settle")


def as_user(kube: ControlPlane, user: str, *args: str, input: str | None = None
            ) -> subprocess.CompletedProcess[str]:
    return kube.kubectl(f"--as={user}", *args, input=input, check=False)


@pytest.fixture(scope="module")
def user_namespace(crd: ControlPlane, helm: Helm) -> Iterator[str]:
    """The chart installed with its defaults, aggregated, and a namespace where EDITOR has ``edit`` and VIEWER has
    ``view`` (RoleBindings to the built-in ClusterRoles, as a cluster admin hands out namespaces)."""
    release_namespace, namespace = crd.create_namespace("release"), crd.create_namespace("team")
    helm.install("roles", release_namespace)
    aggregate(crd)
    crd.kubectl("create", "rolebinding", "editors", "--clusterrole=edit", f"--user={EDITOR}", "-n", namespace)
    crd.kubectl("create", "rolebinding", "viewers", "--clusterrole=view", f"--user={VIEWER}", "-n", namespace)
    yield namespace
    helm.run("uninstall", "roles", "--namespace", release_namespace)


def test_a_user_with_edit_in_a_namespace_creates_scales_and_deletes_task_queues_there(
    crd: ControlPlane, user_namespace: str
) -> None:
    manifest = yaml.safe_dump(task_queue("edited", queues=["edited"], autoscaling={"enabled": False}))

    created = as_user(crd, EDITOR, "apply", "-n", user_namespace, "-f", "-", input=manifest)
    assert created.returncode == 0, created.stderr
    scaled = as_user(crd, EDITOR, "scale", "taskqueue", "edited", "-n", user_namespace, "--replicas=2")
    assert scaled.returncode == 0, scaled.stderr
    status = as_user(crd, EDITOR, "patch", "taskqueue", "edited", "-n", user_namespace, "--subresource=status",
                     "--type=merge", "-p", '{"status": {"replicas": 9}}')
    assert status.returncode != 0, "the status is the operator's to write"
    deleted = as_user(crd, EDITOR, "delete", "taskqueue", "edited", "-n", user_namespace)
    assert deleted.returncode == 0, deleted.stderr
    elsewhere = as_user(crd, EDITOR, "get", "taskqueues", "-n", "default")
    assert elsewhere.returncode != 0, "edit was granted in one namespace only"


def test_a_user_with_view_in_a_namespace_reads_task_queues_and_changes_none(
    crd: ControlPlane, user_namespace: str
) -> None:
    crd.kubectl("apply", "-n", user_namespace, "-f", "-",
                input=yaml.safe_dump(task_queue("watched", queues=["watched"])))

    listed = as_user(crd, VIEWER, "get", "taskqueues", "-n", user_namespace, "-o", "name")
    assert listed.returncode == 0, listed.stderr
    assert "taskqueue.taskfleet.io/watched" in listed.stdout.split()
    for change in (("delete", "taskqueue", "watched"),
                   ("patch", "taskqueue", "watched", "--type=merge", "-p", '{"spec": {"paused": true}}'),
                   ("scale", "taskqueue", "watched", "--replicas=3")):
        refused = as_user(crd, VIEWER, *change, "-n", user_namespace)
        assert refused.returncode != 0, change
        assert "forbidden" in refused.stderr.lower(), refused.stderr
    created = as_user(crd, VIEWER, "apply", "-n", user_namespace, "-f", "-",
                      input=yaml.safe_dump(task_queue("mine", queues=["mine"])))
    assert created.returncode != 0
