"""Scale-in with real pods: the busy pod survives a scale-in from three workers to one, and its task finishes once
(with the feature off, the same scale-in deletes it and its task is cut short and run again from the start); a
worker pod deleted mid-task, or replaced by a rollout, finishes its running task within its grace period, hands
back what it had not started, and loses nothing.

Tasks are held by a *gate* (``realnode.hold``: it runs until the test sets a Redis key), so which pod is busy, and
when it becomes idle, is the test's decision, not a race against sleeps.

Making the feature-off run deterministic: a ReplicaSet deletes, among ready pods of equal deletion cost, the one
ready for the shortest time (in log2 buckets of that time; equal buckets fall to UID order). So the busy pod is made
the newest: two pods come up first and are held busy, a third comes up and takes the long task, then the two are
released, and the scale-in happens while the third has been ready for well under half as long as the others.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from taskfleet import App
from taskfleet.brokers.fleet_store import connect_fleet_store
from taskfleet.fleet.records import WorkerRecord
from tests.realnode.cluster import RealNode, taskqueue
from tests.realnode.conftest import Ledger, PodBroker, Release

pytestmark = pytest.mark.timeout(300)

SELECTOR = "app.kubernetes.io/instance=work"
#: ``drainTimeoutSeconds`` of the worker pods (their grace period is 15 s more): shorter than the held task, so a
#: pod deleted under it is stopped before it can finish.
DRAIN_S = 10
#: Seconds the first two pods have been ready before the third is started: the scale-in then happens while the third
#: has been ready for well under half as long (different log2 buckets of the ReplicaSet's ranking).
HEAD_START_S = 12.0
POD_TIMEOUT_S = 120.0


APP_NAME = "realnode"  # tests/realnode/tasks.py's App: where the worker pods heartbeat


@pytest.fixture
def work(broker: PodBroker, broker_secret: Callable[[str, PodBroker], str], namespace: str,
         sender: Callable[[PodBroker], App]) -> App:
    """The broker Secret in the test's namespace, and the App that sends ``realnode.*`` tasks to queue ``work``."""
    broker_secret(namespace, broker)
    return sender(broker)


def _worker_queue(cluster: RealNode, namespace: str, broker: PodBroker, *, replicas: int, app_name: str | None,
                  prefetch: int | None = 1, env: list[dict[str, str]] | None = None) -> None:
    """TaskQueue ``work``: ``replicas`` workers of one child each (autoscaling off: the test decides)."""
    manifest = taskqueue("work", queues=["work"], broker_secret="broker", management_key=broker.management_key,
                         drain_timeout_s=DRAIN_S)
    manifest["spec"]["autoscaling"] = {"enabled": False, "pollIntervalSeconds": 1}
    manifest["spec"]["replicas"] = replicas
    worker = manifest["spec"]["worker"]
    if prefetch is not None:
        worker["prefetch"] = prefetch
    if app_name is not None:
        worker["appName"] = app_name
    if env:
        worker["env"] = env
    cluster.apply(manifest, namespace)


def _ready_pods(cluster: RealNode, namespace: str) -> dict[str, datetime]:
    """Ready, not terminating worker pods by name, with the time each became ready."""
    ready = {}
    for pod in cluster.pods(namespace, SELECTOR):
        if pod["metadata"].get("deletionTimestamp"):
            continue
        for cond in pod.get("status", {}).get("conditions") or []:
            if cond["type"] == "Ready" and cond["status"] == "True":
                ready[pod["metadata"]["name"]] = datetime.fromisoformat(cond["lastTransitionTime"])
    return ready


def _live_pods(cluster: RealNode, namespace: str) -> set[str]:
    return {p["metadata"]["name"] for p in cluster.pods(namespace, SELECTOR)}


def _markers(ledger: Ledger, marker: str) -> list[dict[str, Any]]:
    return [e for e in ledger.entries() if e["marker"] == marker]


def _send(app: App, task: str, *args: Any) -> None:
    app.send(f"realnode.{task}", args, queue="work")


def _busy_by_heartbeat(app: App, namespace: str) -> dict[str, int]:
    """Running tasks per pod of ``namespace``, as its worker's newest heartbeat reports them."""
    store = connect_fleet_store(app.broker, namespace=APP_NAME)
    try:
        records = [WorkerRecord.from_json(raw) for raw in store.workers()]
    finally:
        store.close()
    newest: dict[str, WorkerRecord] = {}
    for rec in records:
        mine = rec.pod is not None and rec.pod.namespace == namespace
        if mine and rec.pod is not None and (rec.pod.name not in newest or rec.sent_at > newest[rec.pod.name].sent_at):
            newest[rec.pod.name] = rec
    return {pod: rec.busy for pod, rec in newest.items()}


def _reported(app: App, namespace: str, *, idle: set[str], busy: str) -> bool:
    """Whether the newest heartbeats show every pod in ``idle`` idle and ``busy`` running a task: what the operator
    reads at a scale-in (a heartbeat is up to one interval old, so a test that scales in sooner races it)."""
    seen = _busy_by_heartbeat(app, namespace)
    return all(seen.get(pod) == 0 for pod in idle) and seen.get(busy, 0) > 0


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
@pytest.mark.parametrize("spare", [True, False], ids=["spares-busy-pods", "feature-off"])
def test_a_scale_in_from_three_to_one_keeps_the_busy_pod_and_its_task_finishes_exactly_once(
    cluster: RealNode, chart: Release, namespace: str, broker: PodBroker, work: App, ledger: Ledger, spare: bool,
) -> None:
    app_name = APP_NAME if spare else None  # without appName the operator cannot tell busy pods apart
    blockers_gate, long_gate = f"{ledger.key}:blockers", f"{ledger.key}:long"

    # Given two workers held busy, and a third, newer one running the long task
    _worker_queue(cluster, namespace, broker, replicas=2, app_name=app_name)
    first = cluster.wait_until("two ready pods", lambda: len(_ready_pods(cluster, namespace)) == 2 and
                               _ready_pods(cluster, namespace), POD_TIMEOUT_S)
    for i in range(2):
        _send(work, "hold", ledger.url, ledger.key, f"blocker-{i}", blockers_gate)
    cluster.wait_until("both blockers running on the two pods",
                       lambda: {e["pod"] for e in ledger.entries() if e["marker"].endswith(":start")} == set(first),
                       60)
    time.sleep(max(0.0, HEAD_START_S - (datetime.now(UTC) - max(first.values())).total_seconds()))
    _worker_queue(cluster, namespace, broker, replicas=3, app_name=app_name)
    third = cluster.wait_until("a third ready pod", lambda: set(_ready_pods(cluster, namespace)) - set(first),
                               POD_TIMEOUT_S).pop()
    _send(work, "hold", ledger.url, ledger.key, "long", long_gate)
    start = cluster.wait_until("the long task started", lambda: _markers(ledger, "long:start"), 60)
    assert start[0]["pod"] == third, "the only free pod takes the long task"
    ledger.client.set(blockers_gate, 1)
    cluster.wait_until("the two first pods idle and the third busy by their heartbeats",
                       lambda: _reported(work, namespace, idle=set(first), busy=third), 30)
    ready = _ready_pods(cluster, namespace)
    now = datetime.now(UTC)
    assert (now - ready[third]).total_seconds() * 2.5 < min((now - ready[p]).total_seconds() for p in first), \
        "the busy pod must be the one the ReplicaSet's own ranking deletes first"

    # When the TaskQueue scales in to one worker
    scaled_at = time.monotonic()
    _worker_queue(cluster, namespace, broker, replicas=1, app_name=app_name)
    survivors = cluster.wait_until("one pod left", lambda: len(_live_pods(cluster, namespace)) == 1 and
                                   _live_pods(cluster, namespace), DRAIN_S + 15 + 60)
    (survivor,) = survivors
    print(f"[{'spare' if spare else 'off'}] 3 -> 1: two pods gone {time.monotonic() - scaled_at:.1f} s after the "
          f"TaskQueue changed")

    if spare:
        # Then the busy pod survives, and its task finishes there exactly once
        assert survivor == third
        ledger.client.set(long_gate, 1)
        done = cluster.wait_until("the long task done", lambda: _markers(ledger, "long"), 60)
        assert [e["pod"] for e in done] == [third]
        assert [e["pod"] for e in _markers(ledger, "long:start")] == [third], "started once, never cut short"
        tq = cluster.get("taskqueue", "work", namespace) or {}
        reasons = {c["type"]: c["reason"] for c in tq.get("status", {}).get("conditions") or []}
        assert reasons.get("ScaleInSparesBusyPods") == "BusyPodsSpared"
    else:
        # Then (what the feature prevents) the busy pod is deleted; its drain runs out under the task, which goes
        # back to the queue and starts again from scratch on the survivor
        assert survivor != third
        cluster.wait_until("the long task restarted on the survivor",
                           lambda: len(_markers(ledger, "long:start")) == 2, 60)
        ledger.client.set(long_gate, 1)
        done = cluster.wait_until("the long task done", lambda: _markers(ledger, "long"), 60)
        assert [e["pod"] for e in done] == [survivor], "it still finishes exactly once, but only after a restart"
        starts = _markers(ledger, "long:start")
        assert [e["pod"] for e in starts] == [third, survivor]
        print(f"[off] the long task restarted from scratch {starts[1]['t'] - starts[0]['t']:.1f} s after it began")


@pytest.mark.parametrize("how", ["pod-deleted", "rollout"])
def test_a_worker_pod_stopped_mid_task_finishes_it_within_its_grace_period_and_loses_nothing(
    cluster: RealNode, chart: Release, namespace: str, broker: PodBroker, work: App, ledger: Ledger, how: str,
) -> None:
    gate = f"{ledger.key}:gate"
    # The default prefetch (8): the child leases the queued work with the running task, and must hand it back
    _worker_queue(cluster, namespace, broker, replicas=1, app_name=APP_NAME, prefetch=None)
    (pod,) = cluster.wait_until("one ready pod", lambda: _ready_pods(cluster, namespace), POD_TIMEOUT_S)
    spec = (cluster.get("pod", pod, namespace) or {})["spec"]
    command = spec["containers"][0]["command"]
    assert command[command.index("--drain-timeout") + 1] == str(DRAIN_S)
    assert spec["terminationGracePeriodSeconds"] == DRAIN_S + 15, "the grace period outlasts the worker's drain"

    # Given a worker running a held task, with more work sent behind it
    queued = [f"queued-{i}-{uuid.uuid4().hex[:6]}" for i in range(6)]
    _send(work, "hold", ledger.url, ledger.key, "running", gate)
    for marker in queued:
        _send(work, "record", ledger.url, ledger.key, marker)
    cluster.wait_until("the task running", lambda: _markers(ledger, "running:start"), 60)

    # When its pod is deleted (a scale-in) or replaced (a rollout), and the task ends within the drain timeout
    if how == "pod-deleted":
        cluster.kubectl("-n", namespace, "delete", "pod", pod, "--wait=false")
    else:
        _worker_queue(cluster, namespace, broker, replicas=1, app_name=APP_NAME, prefetch=None,
                      env=[{"name": "ROLLOUT", "value": "2"}])
    cluster.wait_until("the old pod terminating", lambda: any(
        p["metadata"]["name"] == pod and p["metadata"].get("deletionTimestamp")
        for p in cluster.pods(namespace, SELECTOR)), 90)
    stopped_at = time.monotonic()
    time.sleep(2.0)
    ledger.client.set(gate, 1)

    # Then the running task finished on the old pod, inside its grace period, and every queued task ran exactly once
    done = cluster.wait_until("the running task done", lambda: _markers(ledger, "running"), 30)
    assert [e["pod"] for e in done] == [pod]
    assert time.monotonic() - stopped_at < DRAIN_S + 15
    cluster.wait_until("every queued task ran", lambda: all(_markers(ledger, m) for m in queued), 120)
    print(f"[{broker.kind} {how}] running task done {done[0]['t'] - time.time() + time.monotonic() - stopped_at:.1f} s "
          f"after the pod began terminating; all {len(queued)} queued tasks done "
          f"{time.monotonic() - stopped_at:.1f} s after")
    time.sleep(2.0)  # a duplicate would show up by now
    assert sorted(e["marker"] for e in ledger.entries() if e["marker"] in queued) == sorted(queued)
    assert all(e["pod"] != pod for e in ledger.entries() if e["marker"] in queued), \
        "the stopped pod started none of its unstarted work: it handed it back"
    assert len(_markers(ledger, "running:start")) == 1, "the running task was never handed to another pod"
