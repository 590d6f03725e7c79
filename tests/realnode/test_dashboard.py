"""The chart's dashboard on a real node: the session release upgraded with ``dashboard.enabled``, the image built from
this tree running ``taskfleet dashboard`` in its pod under its own ServiceAccount, reached at the pod's address as a
Service would reach it. Its probes pass (``helm upgrade --wait``), ``/healthz`` answers without a token at the root
and under the prefix, the API refuses a caller without a token, and ``/api/autoscaling`` shows a TaskQueue with the
operator's status and Events: read in the pod with only the chart's read-only dashboard RBAC."""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.realnode.cluster import CHART, PodRedis, RealNode, taskqueue
from tests.realnode.conftest import Release

pytestmark = pytest.mark.timeout(420)

PREFIX = "/tf"
PORT = 5555
#: The dashboard's Redis db (the broker fixture hands out 0-13 to tests, the ledger is 15).
DASHBOARD_DB = 14
ADMIN_TOKEN, READ_TOKEN = secrets.token_hex(16), secrets.token_hex(16)


@pytest.fixture(scope="module")
def dashboard(cluster: RealNode, chart: Release, pod_redis: PodRedis) -> Iterator[str]:
    """The session release with the dashboard on (its broker a Redis db of its own, tokens from a Secret), until the
    module ends; the dashboard pod's base URL."""
    ns = chart.namespace
    cluster.kubectl("-n", ns, "create", "secret", "generic", "dashboard-broker",
                    f"--from-literal=url={pod_redis.pod_url}/{DASHBOARD_DB}")
    cluster.kubectl("-n", ns, "create", "secret", "generic", "dashboard-tokens",
                    f"--from-literal=admin-token={ADMIN_TOKEN}", f"--from-literal=read-token={READ_TOKEN}")
    on = ["--set", "dashboard.enabled=true", "--set", "dashboard.appName=realnode",
          "--set", "dashboard.broker.urlFrom.secretKeyRef.name=dashboard-broker",
          "--set", "dashboard.broker.urlFrom.secretKeyRef.key=url",
          "--set", "dashboard.auth.existingSecret=dashboard-tokens", "--set", f"dashboard.urlPrefix={PREFIX}"]
    try:
        cluster.helm("upgrade", chart.name, str(CHART), "--namespace", ns, "--reuse-values", *on,
                     "--wait", "--timeout", "3m")
        (pod,) = cluster.pods(ns, f"app.kubernetes.io/instance={chart.name},app.kubernetes.io/component=dashboard")
        yield f"http://{pod['status']['podIP']}:{PORT}"
    finally:
        cluster.helm("upgrade", chart.name, str(CHART), "--namespace", ns, "--reuse-values",
                     "--set", "dashboard.enabled=false", "--wait", "--timeout", "2m", check=False)
        cluster.kubectl("-n", ns, "delete", "secret", "dashboard-broker", "dashboard-tokens", check=False)


def fetch(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_the_dashboard_pod_runs_under_its_own_service_account_and_answers_healthz_without_a_token(
    cluster: RealNode, chart: Release, dashboard: str
) -> None:
    (pod,) = cluster.pods(chart.namespace, f"app.kubernetes.io/instance={chart.name},"
                                           "app.kubernetes.io/component=dashboard")
    assert pod["spec"]["serviceAccountName"] == f"{chart.fullname}-dashboard"
    assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "True"

    assert fetch(f"{dashboard}/healthz") == (200, b"ok")
    assert fetch(f"{dashboard}{PREFIX}/healthz") == (200, b"ok")


def test_the_api_refuses_a_caller_without_a_token_and_answers_the_read_token(dashboard: str) -> None:
    refused, _ = fetch(f"{dashboard}{PREFIX}/api/queues")
    status, body = fetch(f"{dashboard}{PREFIX}/api/whoami", READ_TOKEN)

    assert refused == 401
    assert status == 200, body
    assert json.loads(body)["admin"] is False


def test_autoscaling_shows_a_task_queue_with_the_operators_status_and_events_read_with_the_dashboards_rbac(
    cluster: RealNode, dashboard: str, namespace: str, pod_redis: PodRedis
) -> None:
    # Given a TaskQueue the operator reconciles (its Deployment created: a Reconciled Event; its status written)
    cluster.kubectl("-n", namespace, "create", "secret", "generic", "broker",
                    f"--from-literal=url={pod_redis.pod_url}/{DASHBOARD_DB}")
    cluster.apply(taskqueue("dashboarded", queues=["dashboarded"], broker_secret="broker", min_replicas=0),
                  namespace)

    # When the dashboard's API is asked; Then it shows the TaskQueue, its conditions and the operator's Event
    def shown() -> dict[str, Any] | None:
        status, body = fetch(f"{dashboard}{PREFIX}/api/autoscaling", READ_TOKEN)
        assert status == 200, body
        answer = json.loads(body)
        assert answer["enabled"] is True
        found = [tq for tq in answer["task_queues"] if (tq["namespace"], tq["name"]) == (namespace, "dashboarded")]
        if found and found[0]["conditions"] and any(e["reason"] == "Reconciled" for e in found[0]["events"]):
            return dict(found[0])
        return None

    view = cluster.wait_until("the dashboard shows the TaskQueue with its conditions and Events", shown, 90)
    assert view["queues"] == ["dashboarded"]
    assert (view["min_replicas"], view["max_replicas"]) == (0, 3)
    assert {c["type"] for c in view["conditions"]} >= {"Ready"}
