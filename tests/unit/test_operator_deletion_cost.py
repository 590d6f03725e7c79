"""Scale-in that spares busy pods: before lowering replicas the operator makes idle worker pods the cheapest to
delete (``controller.kubernetes.io/pod-deletion-cost``) from the workers' own heartbeats, writes only the
annotations that must change, and never lets a failure to do so stop the scale-in."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from taskfleet.brokers import connect
from taskfleet.brokers.fleet_store import connect_fleet_store
from taskfleet.cli import build_parser
from taskfleet.errors import ClusterError
from taskfleet.fleet.records import ChildState, PodInfo, WorkerRecord, decode_records
from taskfleet.operator.deletion_cost import (
    DELETION_COST_ANNOTATION,
    Outcome,
    WorkerPod,
    annotation_patches,
    busy_tasks,
    deletion_costs,
    ranked_outcome,
    scale_in_condition,
    worker_pods,
)
from taskfleet.operator.resources import parse_task_queue
from taskfleet.operator.scale_in import ScaleInState, spare_busy_pods
from taskfleet.settings import BrokerSettings


def record(pod: str, *, busy: int = 0, idle: int = 1, namespace: str = "shop", uid: str | None = None,
           sent_at: float = 100.0, on_kubernetes: bool = True) -> WorkerRecord:
    children = tuple(ChildState(slot=i, pid=10 + i, task_id=f"t{i}", task="slow", since=90.0) for i in range(busy))
    children += tuple(ChildState(slot=busy + i, pid=20 + i) for i in range(idle))
    return WorkerRecord(
        id=f"{pod}:1", app="shop", hostname=pod, pid=1, queues=("emails",), concurrency=busy + idle,
        version="0.1.0", started_at=50.0, sent_at=sent_at, children=children,
        pod=PodInfo(name=pod, namespace=namespace, uid=uid or f"uid-{pod}") if on_kubernetes else None,
    )


def pod_json(name: str, *, cost: str | None = None, deleting: bool = False, uid: str | None = None
             ) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": uid or f"uid-{name}", "annotations": {"app": "x"}}
    if cost is not None:
        meta["annotations"][DELETION_COST_ANNOTATION] = cost
    if deleting:
        meta["deletionTimestamp"] = "2026-12-04T08:00:00Z"
    return {"metadata": meta}


# -- which pods, which costs --------------------------------------------------------------------------------------


def test_pods_already_being_deleted_are_not_ranked_and_their_current_cost_is_read() -> None:
    pods = worker_pods([pod_json("a", cost="3"), pod_json("b"), pod_json("c", deleting=True)])

    assert pods == [WorkerPod("a", "uid-a", "3"), WorkerPod("b", "uid-b", None)]


def test_a_malformed_heartbeat_is_skipped() -> None:
    assert [r.hostname for r in decode_records([record("a").to_json(), b"{not json", b'{"v": 99}'])] == ["a"]


@pytest.mark.parametrize(
    ("records", "busy"),
    [
        pytest.param([record("a", busy=2), record("b")], {"uid-a": 2, "uid-b": 0}, id="busy-and-idle"),
        pytest.param([record("a", busy=1, namespace="other"), record("b", on_kubernetes=False)], {},
                     id="other-namespace-or-no-pod"),
        pytest.param([record("a", busy=3, sent_at=10.0), record("a", busy=0, sent_at=20.0)], {"uid-a": 0},
                     id="newest-record-of-a-pod-wins"),
        pytest.param([record("a", busy=0, sent_at=20.0), record("a", busy=1, sent_at=10.0)], {"uid-a": 0},
                     id="older-record-ignored-in-any-order"),
    ],
)
def test_busy_tasks_per_pod_come_from_each_pods_newest_heartbeat(records: list[WorkerRecord],
                                                                  busy: dict[str, int]) -> None:
    assert busy_tasks(records, namespace="shop") == busy


def test_busy_pods_cost_their_running_tasks_and_idle_or_silent_pods_cost_nothing() -> None:
    pods = [WorkerPod("busy2", "u1"), WorkerPod("busy1", "u2"), WorkerPod("idle", "u3"), WorkerPod("silent", "u4")]

    costs = deletion_costs(pods, {"u1": 2, "u2": 1, "u3": 0})

    assert costs == {"busy2": 2, "busy1": 1, "idle": None, "silent": None}


def test_a_heartbeat_of_an_earlier_pod_with_the_same_name_does_not_count() -> None:
    pods = [WorkerPod("a", "uid-new")]

    assert deletion_costs(pods, busy_tasks([record("a", busy=1, uid="uid-old")], namespace="shop")) == {"a": None}


@pytest.mark.parametrize(
    ("pods", "costs", "patches"),
    [
        pytest.param([WorkerPod("a", "u"), WorkerPod("b", "u")], {"a": 2, "b": None}, {"a": "2"},
                     id="only-the-busy-pod-is-annotated"),
        pytest.param([WorkerPod("a", "u", "2"), WorkerPod("b", "u")], {"a": 2, "b": None}, {},
                     id="nothing-changed-nothing-written"),
        pytest.param([WorkerPod("a", "u", "2"), WorkerPod("b", "u", "1")], {"a": None, "b": 3},
                     {"a": None, "b": "3"}, id="a-pod-gone-idle-loses-its-cost"),
        pytest.param([WorkerPod("a", "u", "-5")], {"a": None}, {"a": None}, id="a-foreign-value-is-replaced"),
    ],
)
def test_only_annotations_that_must_change_are_patched(pods: list[WorkerPod], costs: dict[str, int | None],
                                                        patches: dict[str, str | None]) -> None:
    assert annotation_patches(pods, costs) == patches


def test_the_outcome_names_how_many_busy_pods_were_spared() -> None:
    pods = [WorkerPod("a", "u1"), WorkerPod("b", "u2"), WorkerPod("c", "u3")]

    spared = ranked_outcome(pods, {"a": 1, "b": None, "c": None}, current=3, target=1, patched=1)
    idle = ranked_outcome(pods, {"a": None, "b": None, "c": None}, current=3, target=1, patched=0)

    assert (spared.status, spared.reason) == (True, "BusyPodsSpared")
    assert "before scaling from 3 to 1: 1 busy pod(s) made costlier to delete than 2 idle" in spared.message
    assert (idle.status, idle.reason) == (True, "NoBusyPods")


# -- the condition --------------------------------------------------------------------------------------------------

LAST = Outcome(False, "Forbidden", "the operator may not list pods")


@pytest.mark.parametrize(
    ("enabled", "app_name", "last", "previous", "status", "reason"),
    [
        pytest.param(False, "shop", LAST, None, False, "Disabled", id="off-wins"),
        pytest.param(True, None, LAST, None, False, "AppNameUnset", id="no-app-name"),
        pytest.param(True, "shop", LAST, None, False, "Forbidden", id="last-scale-in"),
        pytest.param(True, "shop", None, {"status": "True", "reason": "BusyPodsSpared", "message": "m"}, True,
                     "BusyPodsSpared", id="an-earlier-runs-outcome-is-kept"),
        pytest.param(True, "shop", None, {"status": "False", "reason": "Disabled", "message": "m"}, True, "Enabled",
                     id="an-earlier-runs-off-is-not-kept"),
        pytest.param(True, "shop", None, None, True, "Enabled", id="not-scaled-in-yet"),
    ],
)
def test_the_condition_says_whether_a_scale_in_spares_busy_pods_and_why_not(
    enabled: bool, app_name: str | None, last: Outcome | None, previous: dict[str, str] | None, status: bool,
    reason: str,
) -> None:
    said = scale_in_condition(enabled=enabled, app_name=app_name, last=last, previous=previous)

    assert (said.status, said.reason) == (status, reason)


# -- best effort, against a fake API and the in-process fleet store -------------------------------------------------

TQ_BODY: dict[str, Any] = {
    "metadata": {"name": "emails", "namespace": "shop", "uid": "u-1", "generation": 1},
    "spec": {"queues": ["emails"], "broker": {"url": "memory://deletion-cost"},
             "worker": {"image": "w:1", "app": "shop.tasks:app", "appName": "shop"}},
}
TQ = parse_task_queue(TQ_BODY)


class FakeKube:
    def __init__(self, pods: list[dict[str, Any]], *, fail: int | None = None) -> None:
        self.items = pods
        self.fail = fail
        self.patched: list[tuple[str, dict[str, str | None]]] = []

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        assert (namespace, selector) == ("shop", "app.kubernetes.io/instance=emails,app.kubernetes.io/name="
                                                 "taskfleet-worker")
        self._maybe_fail()
        return self.items

    def annotate_pod(self, namespace: str, name: str, annotations: dict[str, str | None]) -> None:
        self._maybe_fail()
        self.patched.append((name, annotations))

    def _maybe_fail(self) -> None:
        if self.fail is not None:
            try:
                raise ApiException(status=self.fail, reason="Forbidden" if self.fail == 403 else "Error")
            except ApiException as exc:
                raise ClusterError(f"Kubernetes API {self.fail}") from exc


@pytest.fixture
def fleet() -> Iterator[Any]:
    broker = connect(BrokerSettings(url="memory://deletion-cost"))
    store = connect_fleet_store(broker, namespace="shop")
    yield broker, store
    store.close()
    broker.close()


def test_busy_pods_are_annotated_before_a_scale_in_and_a_second_one_writes_nothing(fleet: Any) -> None:
    broker, store = fleet
    for rec in (record("a"), record("b", busy=1), record("c")):
        store.heartbeat(rec.id, rec.to_json(), ttl_s=60)
    kube = FakeKube([pod_json("a"), pod_json("b"), pod_json("c", cost="4")])
    state = ScaleInState()

    outcome = spare_busy_pods(kube, state, TQ, broker, current=3, target=1)  # type: ignore[arg-type]

    assert outcome.reason == "BusyPodsSpared"
    assert sorted(kube.patched) == [("b", {DELETION_COST_ANNOTATION: "1"}), ("c", {DELETION_COST_ANNOTATION: None})]
    kube.items, kube.patched = [pod_json("a"), pod_json("b", cost="1")], []
    assert spare_busy_pods(kube, state, TQ, broker, current=2, target=1).reason == "BusyPodsSpared"  # type: ignore[arg-type]
    assert kube.patched == []
    state.close()


@pytest.mark.parametrize(("status", "reason"), [(403, "Forbidden"), (500, "PodsUnreadable")])
def test_an_api_refusal_is_reported_not_raised(fleet: Any, status: int, reason: str) -> None:
    broker, _ = fleet

    outcome = spare_busy_pods(FakeKube([pod_json("a")], fail=status), ScaleInState(), TQ, broker,  # type: ignore[arg-type]
                              current=2, target=1)

    assert (outcome.status, outcome.reason) == (False, reason)


def test_unreadable_heartbeats_are_reported_and_nothing_is_patched() -> None:
    kube = FakeKube([pod_json("a", cost="2")])

    outcome = spare_busy_pods(kube, ScaleInState(), TQ, None, current=2, target=1)  # type: ignore[arg-type]

    assert (outcome.status, outcome.reason) == (False, "HeartbeatsUnreadable")
    assert kube.patched == []


# -- how it is switched -------------------------------------------------------------------------------------------


def test_the_operator_spares_busy_pods_unless_started_with_no_pod_deletion_cost() -> None:
    on = build_parser().parse_args(["operator", "--all-namespaces"])
    off = build_parser().parse_args(["operator", "--all-namespaces", "--no-pod-deletion-cost"])

    assert (on.pod_deletion_cost, off.pod_deletion_cost) == (True, False)


def test_app_name_is_optional_in_the_worker_spec() -> None:
    without = parse_task_queue({**TQ_BODY, "spec": {**TQ_BODY["spec"], "worker": {"image": "w:1", "app": "m:app"}}})

    assert (TQ.worker.app_name, without.worker.app_name) == ("shop", None)
