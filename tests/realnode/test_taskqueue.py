"""A TaskQueue on a real node: the operator (in its pod) makes a worker Deployment whose real pods process tasks
from a real broker, scale 0 -> N -> 0 on a burst, and go with the TaskQueue (ownerReference garbage collection)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import pytest

from taskfleet import App
from tests.realnode.cluster import RealNode, taskqueue
from tests.realnode.conftest import Ledger, PodBroker, Release

pytestmark = pytest.mark.timeout(300)

BURST = 30
#: A minute of work in all, so the burst outlasts the scale-up however slowly the third pod becomes Ready (8 to
#: 10 s after the burst on a 2-CPU node, the first time): with half-second tasks, two pods sometimes finished it
#: before the third was Ready, and the operator rightly scaled down again.
TASK_SECONDS = 2.0
MAX_REPLICAS = 3
WORKER_SELECTOR = "app.kubernetes.io/name=taskfleet-worker"


def test_a_burst_scales_real_worker_pods_from_zero_to_max_and_back_to_zero_running_each_task_once(
    cluster: RealNode, chart: Release, namespace: str, broker: PodBroker,
    broker_secret: Callable[[str, PodBroker], str],
    sender: Callable[[PodBroker], App], ledger: Ledger,
) -> None:
    # Given a TaskQueue at zero replicas (5 tasks per replica, at most 3)
    secret = broker_secret(namespace, broker)
    cluster.apply(taskqueue("burst", queues=["burst"], broker_secret=secret, management_key=broker.management_key,
                            max_replicas=MAX_REPLICAS, target_per_replica=5, stabilization_s=3), namespace)
    cluster.wait_until("the operator creates burst-worker at 0 replicas",
                       lambda: cluster.replicas(namespace, "burst-worker")[0] == 0, timeout=60)
    # When a burst of 30 two-second tasks arrives
    app = sender(broker)
    started = time.monotonic()
    for i in range(BURST):
        app.send("realnode.record", (ledger.url, ledger.key, f"m{i}", TASK_SECONDS), queue="burst")
    # Then the operator scales to the maximum, and the pods become Ready
    cluster.wait_until("3 worker pods Ready", lambda: cluster.replicas(namespace, "burst-worker")[1] == MAX_REPLICAS,
                       timeout=90)
    to_ready = time.monotonic() - started
    # And every task runs exactly once, spread over the pods
    cluster.wait_until(f"{BURST} tasks recorded", lambda: len(ledger.entries()) >= BURST, timeout=90)
    processed = time.monotonic() - started
    entries = ledger.entries()
    assert sorted(e["marker"] for e in entries) == sorted(f"m{i}" for i in range(BURST)), entries
    assert len({e["pod"] for e in entries}) >= 2, entries
    # And once idle, back to zero replicas and no worker pod left
    cluster.wait_until("scaled back to 0", lambda: cluster.replicas(namespace, "burst-worker")[0] == 0, timeout=90)
    cluster.wait_until("worker pods gone", lambda: not cluster.pods(namespace, WORKER_SELECTOR), timeout=90)
    print(f"[{broker.kind}] 0 -> {MAX_REPLICAS} Ready: {to_ready:.1f} s; {BURST} tasks done: {processed:.1f} s; "
          f"back to 0, pods gone: {time.monotonic() - started:.1f} s; tasks per pod: "
          f"{sorted(Counter(e['pod'] for e in entries).values(), reverse=True)}")


def test_deleting_a_taskqueue_garbage_collects_its_deployment_and_pods(
    cluster: RealNode, chart: Release, namespace: str, broker: PodBroker,
    broker_secret: Callable[[str, PodBroker], str],
) -> None:
    # Given a TaskQueue with one running worker pod
    secret = broker_secret(namespace, broker)
    cluster.apply(taskqueue("gc", queues=["gc"], broker_secret=secret, management_key=broker.management_key,
                            min_replicas=1, max_replicas=1), namespace)
    cluster.wait_until("one worker pod Ready", lambda: cluster.replicas(namespace, "gc-worker")[1] == 1, timeout=90)
    deployment = cluster.get("deployment", "gc-worker", namespace)
    assert deployment is not None
    assert [o["kind"] for o in deployment["metadata"]["ownerReferences"]] == ["TaskQueue"]
    # When the TaskQueue is deleted
    cluster.kubectl("-n", namespace, "delete", "taskqueue", "gc", "--wait=false")
    # Then the garbage collector removes its Deployment, and the Deployment's pods with it
    cluster.wait_until("deploy/gc-worker deleted", lambda: cluster.get("deployment", "gc-worker", namespace) is None,
                       timeout=60)
    cluster.wait_until("worker pods gone", lambda: not cluster.pods(namespace, WORKER_SELECTOR), timeout=90)
