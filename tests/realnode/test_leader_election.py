"""Two operator pods on a real node (``operator.replicas: 2``): one holds the Lease and acts, the other waits and
stays live; when the leader's process is killed (-9, from the node) the other takes over within seconds."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.realnode.cluster import CHART, RealNode
from tests.realnode.conftest import Release

pytestmark = pytest.mark.timeout(600)

#: The lease (10 s) after the last renewal the standby saw, its next try (2 s), kopf's start and one reconcile.
TAKEOVER_S = 25.0


def operator_selector(chart: Release) -> str:
    return f"app.kubernetes.io/instance={chart.name},app.kubernetes.io/component=operator"


def ready_operator_pods(cluster: RealNode, chart: Release) -> list[str]:
    pods = cluster.pods(chart.namespace, operator_selector(chart))
    return sorted(p["metadata"]["name"] for p in pods if p["status"].get("phase") == "Running"
                  and not p["metadata"].get("deletionTimestamp")
                  and {c["type"]: c["status"] for c in p["status"].get("conditions", [])}.get("Ready") == "True")


def lease_holder_pod(cluster: RealNode, chart: Release) -> str:
    lease = cluster.get("lease", chart.fullname, chart.namespace) or {}
    return str(lease.get("spec", {}).get("holderIdentity") or "").rsplit("_", 1)[0]


def host_pid_of(pod: str) -> int | None:
    """The operator process of ``pod`` as the node sees it (its HOSTNAME is the pod's name)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"operator" in cmdline and f"HOSTNAME={pod}".encode() in environ:
            return int(entry.name)
    return None


@pytest.fixture
def two_replicas(cluster: RealNode, chart: Release) -> Iterator[Release]:
    """The session's release with two operator replicas (leader election on), back to one afterwards."""
    def upgrade(replicas: int) -> None:
        cluster.helm("upgrade", chart.name, str(CHART), "--namespace", chart.namespace, "--reuse-values",
                     "--set", f"operator.replicas={replicas}", "--wait", "--timeout", "3m")

    upgrade(2)
    try:
        yield chart
    finally:
        upgrade(1)


def test_of_two_operator_pods_one_acts_and_the_other_takes_over_within_seconds_when_it_is_killed(
    cluster: RealNode, two_replicas: Release, namespace: str
) -> None:
    chart = two_replicas
    # Given two Ready operator pods (the standby answers its liveness probe) and one of them holding the Lease
    pods = cluster.wait_until("two Ready operator pods", lambda: len(ready_operator_pods(cluster, chart)) == 2
                              and ready_operator_pods(cluster, chart), timeout=120)
    leader = cluster.wait_until("a Lease holder among them",
                                lambda: (h := lease_holder_pod(cluster, chart)) in pods and h, timeout=60)
    (standby,) = (p for p in pods if p != leader)
    cluster.wait_until("the other pod waiting for the Lease",
                       lambda: "leader_election_standby" in cluster.kubectl("-n", chart.namespace, "logs",
                                                                            standby).stdout, timeout=60)
    time.sleep(3)  # a few of the leader's polls and the standby's tries
    standby_log = cluster.kubectl("-n", chart.namespace, "logs", standby).stdout
    assert "leader_elected" not in standby_log
    assert "Handler '" not in standby_log, "the standby runs no kopf handler"

    # When the leader's process is killed with SIGKILL (no chance to release the Lease)
    pid = host_pid_of(leader)
    assert pid is not None, f"no process of {leader} on the node"
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    # ... and a TaskQueue is created right after (paused: no worker pods needed to see the operator act)
    cluster.apply({
        "apiVersion": "taskfleet.io/v1alpha1", "kind": "TaskQueue", "metadata": {"name": "after-kill"},
        "spec": {"queues": ["after-kill"], "paused": True, "broker": {"url": "redis://nowhere:6379/0"},
                 "worker": {"image": "localhost/taskfleet-worker-test:local", "app": "tests.realnode.tasks:app"}},
    }, namespace)

    # Then the other pod takes the Lease and reconciles the new TaskQueue within seconds
    cluster.wait_until("the standby holds the Lease", lambda: lease_holder_pod(cluster, chart) == standby,
                       timeout=TAKEOVER_S, interval=0.2)
    cluster.wait_until("the new TaskQueue's Deployment",
                       lambda: cluster.get("deployment", "after-kill-worker", namespace), timeout=TAKEOVER_S,
                       interval=0.2)
    took = time.monotonic() - killed
    print(f"operator takeover on a real node after kill -9: {took:.1f} s")
    assert took < TAKEOVER_S
    assert "leader_elected" in cluster.kubectl("-n", chart.namespace, "logs", standby).stdout
    # And the killed pod's container restarts as a standby (the pod stays; restartPolicy Always)
    cluster.wait_until("the killed pod back, Ready", lambda: leader in ready_operator_pods(cluster, chart),
                       timeout=120)
    print(json.dumps({"leader": leader, "standby": standby, "takeover_s": round(took, 1)}))
