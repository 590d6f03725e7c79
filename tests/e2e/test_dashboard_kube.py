"""The dashboard's ``KubeReader`` against a real kube-apiserver, as the chart's dashboard ServiceAccount: the chart is
installed with the dashboard on, once per RBAC mode (a ClusterRole, or Roles in ``watchNamespaces``), and the reader
authenticates with a token of that ServiceAccount, so the API server enforces exactly the chart's dashboard RBAC.
It reads TaskQueues (spec and status) and their Events, and nothing else: Secrets are forbidden."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from taskfleet.dashboard.kube import KubeReader, forbidden
from taskfleet.errors import ClusterError
from tests.support.chart import Helm, can_i, service_account_kubeconfig
from tests.support.k8s import ControlPlane
from tests.support.operator import apply, create_broker_secret, task_queue

pytestmark = pytest.mark.e2e

RBAC_MODES = ("cluster-wide", "namespaced")
T0 = datetime(2026, 12, 4, 10, 0, 0, tzinfo=UTC)


@dataclass
class Dashboard:
    """The chart installed with the dashboard on, and what its ServiceAccount may read."""

    kube: ControlPlane
    kubeconfig: Path
    release_namespace: str
    #: Where TaskQueues are read: every namespace (cluster-wide), or the watched ones.
    namespaces: list[str]
    watches_all: bool
    unwatched: str
    readers: list[KubeReader] = field(default_factory=list)

    def reader(self) -> KubeReader:
        found = KubeReader.connect(namespaces=None if self.watches_all else self.namespaces,
                                   kubeconfig=str(self.kubeconfig))
        self.readers.append(found)
        return found


@pytest.fixture(scope="module", params=RBAC_MODES)
def dashboard(crd: ControlPlane, helm: Helm, request: pytest.FixtureRequest,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    mode: str = request.param
    watched = [crd.create_namespace("dash-watched") for _ in range(2)]
    release_namespace = crd.create_namespace("dash-release")
    release = f"dash-{mode}"
    helm.install(release, release_namespace, values={
        "watchNamespaces": watched if mode == "namespaced" else [],
        "dashboard": {"enabled": True, "appName": "shop", "auth": {"existingSecret": "dashboard-tokens"},
                      "broker": {"urlFrom": {"secretKeyRef": {"name": "broker", "key": "url"}}}},
    })
    kubeconfig = service_account_kubeconfig(crd, release_namespace, f"{release}-taskfleet-dashboard",
                                            tmp_path_factory.mktemp("dashboard-sa") / "kubeconfig")
    found = Dashboard(crd, kubeconfig, release_namespace, watched, mode == "cluster-wide",
                      unwatched=crd.create_namespace("dash-unwatched"))
    yield found
    for reader in found.readers:
        reader.close()
    # Leave no TaskQueue for a later module's cluster-wide operator to reconcile (namespaces are never deleted).
    for namespace in (*watched, found.unwatched):
        crd.kubectl("delete", "taskqueues", "--all", "-n", namespace, "--wait=false")
    # Modules share the control plane; the release's cluster-scoped RBAC must not outlive it.
    helm.run("uninstall", release, "--namespace", release_namespace)


def set_status(kube: ControlPlane, namespace: str, name: str, status: dict[str, Any]) -> None:
    """Write a TaskQueue's status as the operator does (admin here: the dashboard may not)."""
    kube.kubectl("patch", "taskqueue", name, "-n", namespace, "--subresource=status", "--type=merge",
                 "-p", json.dumps({"status": status}))


def post_event(kube: ControlPlane, namespace: str, *, name: str, reason: str, at: datetime, kind: str = "TaskQueue",
               type_: str = "Normal", count: int = 1) -> None:
    """A core/v1 Event about object ``kind``/``name``, as the operator posts them."""
    stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{name}.", "namespace": namespace},
        "involvedObject": {"apiVersion": "taskfleet.io/v1alpha1" if kind == "TaskQueue" else "apps/v1",
                           "kind": kind, "name": name, "namespace": namespace},
        "reason": reason, "message": f"{reason} at {stamp}", "type": type_,
        "source": {"component": "taskfleet-operator"}, "firstTimestamp": stamp, "lastTimestamp": stamp,
        "count": count,
    }
    kube.kubectl("create", "-f", "-", input=yaml.safe_dump(body))


def test_the_dashboard_reads_task_queues_with_their_queues_range_status_and_conditions(
    dashboard: Dashboard,
) -> None:
    kube, namespace = dashboard.kube, dashboard.namespaces[0]
    apply(kube, namespace, task_queue("emails", queues=["emails", "emails-low"],
                                      autoscaling={"minReplicas": 1, "maxReplicas": 6}))
    set_status(kube, namespace, "emails", {
        "replicas": 2, "desiredReplicas": 3, "readyReplicas": 1, "workers": "1/2",
        "conditions": [{"type": "Scaling", "status": "True", "reason": "ScaledUp", "message": "2 -> 3",
                        "lastTransitionTime": "2026-12-04T10:00:00Z"}]})

    views = {(v.namespace, v.name): v for v in dashboard.reader().task_queues()}

    view = views[(namespace, "emails")]
    assert view.queues == ["emails", "emails-low"]
    assert (view.replicas, view.desired, view.ready_workers) == (2, 3, 1)
    assert (view.min_replicas, view.max_replicas) == (1, 6)
    assert view.conditions == [{"type": "Scaling", "status": "True", "reason": "ScaledUp", "message": "2 -> 3"}]


def test_task_queues_of_every_namespace_in_scope_are_read_and_none_outside_it(dashboard: Dashboard) -> None:
    kube = dashboard.kube
    for namespace in dashboard.namespaces:
        apply(kube, namespace, task_queue("reports", queues=["reports"]))
    apply(kube, dashboard.unwatched, task_queue("reports", queues=["reports"]))

    found = {(v.namespace, v.name) for v in dashboard.reader().task_queues() if v.name == "reports"}

    in_scope = {(ns, "reports") for ns in dashboard.namespaces}
    assert found == (in_scope | {(dashboard.unwatched, "reports")} if dashboard.watches_all else in_scope)


def test_a_task_queues_events_are_read_newest_first_and_no_other_objects(dashboard: Dashboard) -> None:
    kube, namespace = dashboard.kube, dashboard.namespaces[1]
    apply(kube, namespace, task_queue("billing", queues=["billing"]))
    post_event(kube, namespace, name="billing", reason="ScaledUp", at=T0)
    post_event(kube, namespace, name="billing", reason="BrokerUnreachable", at=T0 + timedelta(minutes=5),
               type_="Warning", count=4)
    post_event(kube, namespace, name="billing", reason="ScaledDown", at=T0 + timedelta(minutes=2))
    post_event(kube, namespace, name="billing-2", reason="ScaledUp", at=T0 + timedelta(minutes=9))
    post_event(kube, namespace, name="billing", reason="ScalingReplicaSet", at=T0 + timedelta(minutes=9),
               kind="Deployment")
    reader = dashboard.reader()

    events = reader.events(namespace, "billing")
    newest = reader.events(namespace, "billing", limit=1)

    assert [e.reason for e in events] == ["BrokerUnreachable", "ScaledDown", "ScaledUp"]
    assert (events[0].type, events[0].count, events[0].at) == ("Warning", 4, (T0 + timedelta(minutes=5)).timestamp())
    assert events[0].message == "BrokerUnreachable at 2026-12-04T10:05:00Z"
    assert [e.reason for e in newest] == ["BrokerUnreachable"]


def test_a_task_queue_without_events_has_none(dashboard: Dashboard) -> None:
    assert dashboard.reader().events(dashboard.namespaces[0], "never-created") == []


def test_the_dashboard_may_not_read_secrets_or_change_anything(dashboard: Dashboard) -> None:
    kube, namespace = dashboard.kube, dashboard.namespaces[0]
    create_broker_secret(kube, namespace, "redis://redis:6379/0", name="dashboard-cannot-read")
    api = dashboard.reader()._api  # the reader's own credentials, for calls the reader never makes

    with pytest.raises(ApiException) as refused:
        kubernetes.client.CoreV1Api(api).read_namespaced_secret("dashboard-cannot-read", namespace)
    assert refused.value.status == 403
    for verb in ("get", "list", "watch"):
        assert not can_i(kube, dashboard.kubeconfig, verb, "secrets", namespace=namespace)
    for verb, resource in (("create", "taskqueues"), ("patch", "taskqueues"), ("delete", "taskqueues"),
                           ("create", "events"), ("delete", "events"), ("list", "pods"), ("get", "deployments")):
        assert not can_i(kube, dashboard.kubeconfig, verb, resource, namespace=namespace), (verb, resource)
    assert not can_i(kube, dashboard.kubeconfig, "patch", "taskqueues", namespace=namespace, subresource="status")


def test_outside_the_watched_namespaces_reading_is_a_forbidden_cluster_error(dashboard: Dashboard) -> None:
    reader = KubeReader.connect(namespaces=[dashboard.unwatched], kubeconfig=str(dashboard.kubeconfig))
    dashboard.readers.append(reader)
    apply(dashboard.kube, dashboard.unwatched, task_queue("outside", queues=["outside"]))

    if dashboard.watches_all:  # a ClusterRole: every namespace is in scope
        assert "outside" in [v.name for v in reader.task_queues()]
        assert reader.events(dashboard.unwatched, "outside") == []
        return
    with pytest.raises(ClusterError) as refused:
        reader.task_queues()
    assert forbidden(refused.value)
    with pytest.raises(ClusterError) as refused_events:
        reader.events(dashboard.unwatched, "outside")
    assert forbidden(refused_events.value)
