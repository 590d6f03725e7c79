"""What users see of the operator and its workers on a real node: an operator that cannot reach the API server is
never Ready (so ``helm install --wait`` and rollouts wait), and worker pods that do not run show in
``kubectl get taskqueues`` as ``WORKERS 0/1`` with the kubelet's reason, until the TaskQueue is fixed."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.realnode.cluster import TEST_WORKER_IMAGE, PodRedis, RealNode, taskqueue
from tests.realnode.conftest import PodBroker, Release

pytestmark = pytest.mark.timeout(300)

#: An address nothing answers at (TEST-NET-1): the operator's in-cluster API server address is pointed there.
UNREACHABLE_API = "192.0.2.1"
#: How long the cut-off operator is watched to stay unready (its readiness probe runs every 5 s).
UNREADY_WATCH_S = 30
MISSING_IMAGE = "localhost/taskfleet-worker-missing:local"


@pytest.fixture
def cut_off_operator(cluster: RealNode, chart: Release) -> Iterator[str]:
    """A second Deployment of the chart's operator (same image, ServiceAccount, args and probes) whose in-cluster
    API address answers nothing, as when DNS or the network fails; its name (deleted afterwards)."""
    source = cluster.get("deployment", chart.fullname, chart.namespace)
    assert source is not None
    name = f"{chart.name}-cut-off"
    template: dict[str, Any] = copy.deepcopy(source["spec"]["template"])
    template["metadata"]["labels"] = {"app": name}  # not the chart's: its Service and tests must not see it
    (container,) = template["spec"]["containers"]
    container["env"] = [{"name": "KUBERNETES_SERVICE_HOST", "value": UNREACHABLE_API},
                        {"name": "KUBERNETES_SERVICE_PORT", "value": "443"}]
    cluster.apply({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": name, "namespace": chart.namespace},
                   "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}}, "template": template}})
    yield name
    cluster.kubectl("-n", chart.namespace, "delete", "deployment", name, "--wait=false", check=False)


def test_an_operator_that_cannot_reach_the_api_server_is_never_ready(
    cluster: RealNode, chart: Release, cut_off_operator: str
) -> None:
    selector = f"app={cut_off_operator}"
    # Given the operator's pod running, with its API server out of reach
    cluster.wait_until("the cut-off operator's pod runs",
                       lambda: [p for p in cluster.pods(chart.namespace, selector)
                                if p["status"].get("phase") == "Running"], timeout=60)
    # Then a rollout never completes: the readiness probe keeps it out (what `helm install --wait` waits on)
    rollout = cluster.kubectl("-n", chart.namespace, "rollout", "status", f"deployment/{cut_off_operator}",
                              f"--timeout={UNREADY_WATCH_S}s", check=False, timeout=UNREADY_WATCH_S + 30)
    assert rollout.returncode != 0, rollout.stdout
    (pod,) = cluster.pods(chart.namespace, selector)
    assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "False"
    events = json.loads(cluster.kubectl("-n", chart.namespace, "get", "events", "--field-selector",
                                        f"involvedObject.name={pod['metadata']['name']}", "-o", "json").stdout)
    probes = [e["message"] for e in events["items"] if e.get("reason") == "Unhealthy"]
    assert any("Readiness probe failed: HTTP probe failed with statuscode: 503" in m for m in probes), probes
    # And the chart's own operator, which reaches the API server, is Ready all along
    (ours,) = cluster.pods(chart.namespace, f"app.kubernetes.io/instance={chart.name},"
                                            "app.kubernetes.io/component=operator")
    assert {c["type"]: c["status"] for c in ours["status"]["conditions"]}["Ready"] == "True"


def workers(cluster: RealNode, namespace: str, name: str) -> tuple[str, str]:
    """(WORKERS, WORKERS-REASON) as ``kubectl get tq -o wide`` prints them."""
    header, row = cluster.kubectl("-n", namespace, "get", "tq", name, "-o", "wide").stdout.splitlines()[:2]
    cells = dict(zip(header.split(), row.split(), strict=False))
    return cells.get("WORKERS", ""), cells.get("WORKERS-REASON", "")


def test_a_worker_image_that_does_not_exist_shows_in_kubectl_get_taskqueues_until_it_is_fixed(
    cluster: RealNode, chart: Release, namespace: str, pod_redis: PodRedis,
    broker_secret: Callable[[str, PodBroker], str],
) -> None:
    # Given a TaskQueue that keeps one worker, from an image the node does not have (pull policy Never)
    secret = broker_secret(namespace, PodBroker("redis", f"{pod_redis.url}/14", f"{pod_redis.pod_url}/14"))
    manifest = taskqueue("broken", queues=["broken"], broker_secret=secret, min_replicas=1)
    manifest["spec"]["worker"]["image"] = MISSING_IMAGE
    cluster.apply(manifest, namespace)

    # Then kubectl get taskqueues shows 0/1 and the kubelet's reason
    cluster.wait_until("WORKERS 0/1 ErrImageNeverPull",
                       lambda: workers(cluster, namespace, "broken") == ("0/1", "ErrImageNeverPull"), timeout=90)
    found = cluster.get("taskqueue", "broken", namespace) or {}
    (condition,) = [c for c in found["status"]["conditions"] if c["type"] == "WorkersReady"]
    assert condition["status"] == "False"
    assert MISSING_IMAGE in condition["message"], condition

    # When the image is fixed, the pod runs and the condition turns True
    cluster.kubectl("-n", namespace, "patch", "tq", "broken", "--type=merge",
                    "-p", json.dumps({"spec": {"worker": {"image": TEST_WORKER_IMAGE}}}))
    cluster.wait_until("WORKERS 1/1 AllReady",
                       lambda: workers(cluster, namespace, "broken") == ("1/1", "AllReady"), timeout=120)


def test_a_crash_looping_worker_shows_in_kubectl_get_taskqueues_with_its_exit_code(
    cluster: RealNode, chart: Release, namespace: str, pod_redis: PodRedis,
    broker_secret: Callable[[str, PodBroker], str],
) -> None:
    # Given a TaskQueue whose workers cannot load their app (the worker exits at start-up)
    secret = broker_secret(namespace, PodBroker("redis", f"{pod_redis.url}/13", f"{pod_redis.pod_url}/13"))
    cluster.apply(taskqueue("crashing", queues=["crashing"], broker_secret=secret, min_replicas=1,
                            app="no_such_module:app"), namespace)

    # Then, once the kubelet backs off restarting it, kubectl shows why
    cluster.wait_until("WORKERS 0/1 CrashLoopBackOff",
                       lambda: workers(cluster, namespace, "crashing") == ("0/1", "CrashLoopBackOff"), timeout=120)
    found = cluster.get("taskqueue", "crashing", namespace) or {}
    (condition,) = [c for c in found["status"]["conditions"] if c["type"] == "WorkersReady"]
    assert "last exited with code" in condition["message"], condition
