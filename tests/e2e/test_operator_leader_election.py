"""Two operator replicas with leader election (operator/leader_election.py), as the chart runs them with
``operator.replicas: 2``: real operator processes with the chart's arguments and its ServiceAccount's token, against
the test control plane. One acts; the standby neither scales nor writes status; when the leader is killed (-9) the
standby takes over within the lease duration; when it stops cleanly, at the standby's next try."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskfleet.operator.leader_election import LeaseTiming
from tests.support.chart import Helm, operator_container, service_account_kubeconfig
from tests.support.k8s import ControlPlane
from tests.support.operator import (
    OperatorProcess,
    apply,
    create_broker_secret,
    get,
    task_queue,
    wait_replicas,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

RELEASE = "elect"
TIMING = LeaseTiming()
#: After kill -9: the lease runs out, the standby's next try, then kopf starts and polls once (a few seconds).
TAKEOVER_AFTER_KILL_S = TIMING.lease_duration_s + TIMING.retry_period_s + 6
#: After a clean stop the Lease is released: the standby's next try, then kopf starts and polls once.
TAKEOVER_AFTER_STOP_S = TIMING.retry_period_s + 6


class Pair:
    """The release's operator arguments and ServiceAccount credentials, to start replicas with."""

    def __init__(self, kube: ControlPlane, namespace: str, args: list[str], kubeconfig: Path) -> None:
        self.kube, self.namespace, self.args, self.kubeconfig = kube, namespace, args, kubeconfig
        self.started: list[OperatorProcess] = []

    def start(self) -> OperatorProcess:
        process = OperatorProcess(self.kube, args=self.args, kubeconfig=self.kubeconfig).wait_ready()
        self.started.append(process)
        return process

    def holder(self) -> str:
        lease = get(self.kube, self.namespace, "lease", f"{RELEASE}-taskfleet") or {}
        return str(lease.get("spec", {}).get("holderIdentity") or "")


@pytest.fixture(scope="module")
def release(crd: ControlPlane, helm: Helm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    namespace = crd.create_namespace("elect")
    helm.install(RELEASE, namespace, values={"operator": {"replicas": 2}})
    fullname = f"{RELEASE}-taskfleet"
    container = operator_container(crd, namespace, fullname)
    assert f"--leader-elect={namespace}/{fullname}" in container["args"]
    kubeconfig = service_account_kubeconfig(crd, namespace, fullname, tmp_path_factory.mktemp("sa") / "kubeconfig")
    yield Pair(crd, namespace, container["args"], kubeconfig)
    helm.run("uninstall", RELEASE, "--namespace", namespace)


@pytest.fixture
def pair(release: Pair) -> Iterator[Pair]:
    release.kube.kubectl("delete", "lease", f"{RELEASE}-taskfleet", "-n", release.namespace, "--ignore-not-found")
    yield release
    for process in release.started:
        process.stop()
    release.started.clear()


def leading(process: OperatorProcess) -> bool:
    return "leader_elected" in process.log_text()


def acted(process: OperatorProcess) -> bool:
    """Whether it ran a kopf handler or scaled (a standby runs neither kopf nor the autoscaler)."""
    return any(word in process.log_text() for word in ('"scaled"', "Handler '"))


def set_min_replicas(kube: ControlPlane, namespace: str, name: str, count: int) -> None:
    kube.kubectl("patch", "taskqueue", name, "-n", namespace, "--type=merge",
                 "-p", json.dumps({"spec": {"autoscaling": {"minReplicas": count}}}))


def start_two(pair: Pair, kube: ControlPlane, namespace: str, redis_url: str) -> tuple[OperatorProcess,
                                                                                       OperatorProcess]:
    """Two replicas and a TaskQueue at one replica; returns (leader, standby)."""
    first, second = pair.start(), pair.start()
    wait_for(lambda: leading(first) or leading(second), 30, interval=0.2, message="nobody leads")
    leader, standby = (first, second) if leading(first) else (second, first)
    create_broker_secret(kube, namespace, redis_url)
    apply(kube, namespace, task_queue("orders", queues=["orders"],
                                      autoscaling={"minReplicas": 1, "pollIntervalSeconds": 1}))
    wait_replicas(kube, namespace, "orders-worker", 1, timeout=15)
    return leader, standby


def test_one_replica_acts_and_the_standby_takes_over_within_seconds_when_the_leader_is_killed(
    crd: ControlPlane, pair: Pair, redis_url: str, record_property: pytest.RecordProperty
) -> None:
    namespace = crd.create_namespace("tq")
    leader, standby = start_two(pair, crd, namespace, redis_url)
    time.sleep(3)  # three polls of the leader
    assert not leading(standby)
    assert not acted(standby), f"the standby acted:\n{standby.log_text()[-2000:]}"
    assert pair.holder(), "the leader holds the Lease"

    # When the leader dies without a word, and the TaskQueue then asks for two workers
    leader.proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    set_min_replicas(crd, namespace, "orders", 2)

    # Then the standby takes over and scales, within the lease duration and a few seconds
    took = wait_replicas(crd, namespace, "orders-worker", 2, timeout=TAKEOVER_AFTER_KILL_S + 10) - killed
    record_property("takeover_after_kill_s", round(took, 1))
    print(f"takeover after kill -9: {took:.1f} s")
    assert leading(standby)
    assert took < TAKEOVER_AFTER_KILL_S


def test_a_leader_stopped_cleanly_hands_over_at_the_standbys_next_try(
    crd: ControlPlane, pair: Pair, redis_url: str, record_property: pytest.RecordProperty
) -> None:
    namespace = crd.create_namespace("tq")
    leader, standby = start_two(pair, crd, namespace, redis_url)

    leader.proc.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    set_min_replicas(crd, namespace, "orders", 2)

    took = wait_replicas(crd, namespace, "orders-worker", 2, timeout=TAKEOVER_AFTER_STOP_S + 10) - stopped
    record_property("takeover_after_sigterm_s", round(took, 1))
    print(f"takeover after SIGTERM: {took:.1f} s")
    assert leader.proc.wait(timeout=15) == 0
    assert leading(standby)
    assert took < TAKEOVER_AFTER_STOP_S
