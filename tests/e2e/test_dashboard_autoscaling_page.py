"""The dashboard's Autoscaling page in real headless Chromium, against the real operator on a real kube-apiserver
and a real Redis: a burst scales a TaskQueue from zero, and the page shows what the API server holds (replicas, the
operator's conditions and its Events) and the replicas over time, next to the queue's depth.

One RBAC mode is enough here (the operator's RBAC modes are tested in test_operator.py; the dashboard's own in
test_dashboard_kube.py); the dashboard reads with the admin kubeconfig of the control plane."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.request import Request, urlopen

import pytest
from playwright.sync_api import Browser

from taskfleet import App
from tests import tasks
from tests.support.browser import ACTION_TIMEOUT_MS, VIEWPORT, RequestLog, reload_until
from tests.support.dashboard import DashboardProcess
from tests.support.k8s import ControlPlane
from tests.support.operator import OperatorProcess, apply, create_broker_secret, task_queue, wait_replicas
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "dashboard"


def api(dashboard: DashboardProcess, path: str) -> Any:
    request = Request(dashboard.url + path.lstrip("/"), headers={"Authorization": f"Bearer {dashboard.read_token}"})
    with urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def task_queue_view(dashboard: DashboardProcess, namespace: str, name: str) -> dict[str, Any]:
    views = [tq for tq in api(dashboard, "/api/autoscaling")["task_queues"]
             if (tq["namespace"], tq["name"]) == (namespace, name)]
    return views[0] if views else {}


@pytest.mark.timeout(240)
@pytest.mark.parametrize("broker_kind", ["redis"], indirect=True)
@pytest.mark.parametrize("operator", ["cluster-wide"], indirect=True)
def test_the_autoscaling_page_shows_a_burst_scaling_a_task_queue_with_the_operators_reasons(
    crd: ControlPlane, namespace: str, operator: OperatorProcess, broker_url: str, app: App, chromium: Browser,
) -> None:
    # Given a TaskQueue at zero replicas (one replica per 10 tasks, at most 3), and the dashboard reading the cluster
    create_broker_secret(crd, namespace, broker_url)
    apply(crd, namespace, task_queue("dash", queues=["tests"], autoscaling={
        "minReplicas": 0, "maxReplicas": 3, "targetPerReplica": 10, "pollIntervalSeconds": 1}))
    dashboard = DashboardProcess(broker=broker_url, app="tests.tasks:app",
                                 extra=["--kube", "--kubeconfig", str(crd.kubeconfig)]).start()
    context = chromium.new_context(viewport=VIEWPORT,
                                   extra_http_headers={"Authorization": f"Bearer {dashboard.read_token}"})
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    log = RequestLog()
    context.on("request", lambda request: log.urls.append(request.url))
    try:
        wait_for(lambda: task_queue_view(dashboard, namespace, "dash").get("samples"), 30,
                 message="the dashboard never sampled the TaskQueue")

        # When a burst of 30 tasks arrives
        for i in range(30):
            tasks.add.delay(i, 1)
        wait_replicas(crd, namespace, "dash-worker", 3, timeout=30)

        # Then the page shows 3 replicas, the operator's Scaling condition and its Scaled Event
        page = context.new_page()
        reload_until(page, dashboard.url + "autoscaling",
                     lambda p: p.locator(f"[data-name='{namespace}/dash'] [data-testid=replicas]").inner_text() == "3",
                     timeout_s=30)
        section = page.locator(f"[data-name='{namespace}/dash']")
        assert "Scaling" in section.locator("[data-testid=conditions]").inner_text()
        events = section.locator("[data-testid=events]").inner_text()
        assert "Scaled" in events
        assert " to 3: ready=" in events, events  # on Redis the wake notice of the first task scales 0 -> 1 first

        # And its history holds the replicas over time, from 0 to 3, drawn as a chart beside the queue's depth
        wait_for(lambda: {s["replicas"] for s in task_queue_view(dashboard, namespace, "dash")["samples"]} >= {0, 3},
                 30, message="the dashboard's samples never showed 0 then 3 replicas")
        page.reload()
        wait_for(lambda: section.locator("[data-testid=scale-chart] canvas").count() >= 1, 15,
                 message="the replicas chart was not drawn")
        if os.environ.get("TASKFLEET_UPDATE_SCREENSHOTS") == "1":
            page.screenshot(path=str(SCREENSHOTS / "autoscaling.png"))
        assert log.origins() <= {dashboard.origin}, sorted(log.origins())
    finally:
        context.close()
        dashboard.stop()
        print(f"--- dashboard log:\n{dashboard.log_text()[-3000:]}")
