"""Which worker pods a scale-in should remove first: pure decisions over the pods and the workers' heartbeats.

When a Deployment's replicas go down, its ReplicaSet picks the pods to delete. After scheduling state and readiness
it ranks them by the ``controller.kubernetes.io/pod-deletion-cost`` annotation (lowest first), then by how recently
they became ready (newest first). Left alone it may well delete the one pod running a long task: its worker then
drains (finishes what it runs within ``drainTimeoutSeconds``, hands back the rest), but a task longer than that is
cut short and redelivered. Before lowering replicas the operator therefore sets each pod's cost from its worker's
own heartbeat (``taskfleet.fleet.records.WorkerRecord``: which children are busy):

- a busy pod costs the number of tasks its worker is running (more work held, kept longer);
- an idle pod, or one with no live heartbeat (starting, wedged, or not a worker of this app), has no annotation,
  which the ReplicaSet reads as cost 0: it goes first.

Only pods whose annotation must change are patched (``annotation_patches``), so steady fleets cost the API server
nothing, and nothing is patched unless a scale-in is about to happen. ``scale_in_condition`` is what the TaskQueue's
``ScaleInSparesBusyPods`` condition says.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from taskfleet.fleet.records import WorkerRecord

DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
CONDITION_TYPE = "ScaleInSparesBusyPods"
#: Reasons of the condition: False ones say why a scale-in picks pods by the ReplicaSet's default ranking.
DISABLED = "Disabled"
APP_NAME_UNSET = "AppNameUnset"
FORBIDDEN = "Forbidden"
HEARTBEATS_UNREADABLE = "HeartbeatsUnreadable"
PODS_UNREADABLE = "PodsUnreadable"
ENABLED = "Enabled"
BUSY_PODS_SPARED = "BusyPodsSpared"
NO_BUSY_PODS = "NoBusyPods"


@dataclass(frozen=True, slots=True)
class WorkerPod:
    """One live pod of a worker Deployment and its deletion cost annotation now (None: not set)."""

    name: str
    uid: str
    cost: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the ``ScaleInSparesBusyPods`` condition says: its status, CamelCase reason and message."""

    status: bool
    reason: str
    message: str


def worker_pods(items: Iterable[Mapping[str, Any]]) -> list[WorkerPod]:
    """The pods of a pod list (JSON) that a scale-in can still pick: those not already being deleted."""
    pods = []
    for item in items:
        meta = item.get("metadata") or {}
        if meta.get("deletionTimestamp") or not meta.get("name") or not meta.get("uid"):
            continue
        cost = (meta.get("annotations") or {}).get(DELETION_COST_ANNOTATION)
        pods.append(WorkerPod(name=str(meta["name"]), uid=str(meta["uid"]), cost=None if cost is None else str(cost)))
    return pods


def busy_tasks(records: Iterable[WorkerRecord], *, namespace: str) -> dict[str, int]:
    """Tasks running per pod uid in ``namespace``, from each pod's newest record (a restarted container's old
    record may live on until it expires). Workers outside Kubernetes or in other namespaces are left out."""
    newest: dict[str, WorkerRecord] = {}
    for record in records:
        pod = record.pod
        if pod is None or pod.namespace != namespace:
            continue
        seen = newest.get(pod.uid)
        if seen is None or record.sent_at > seen.sent_at:
            newest[pod.uid] = record
    return {uid: record.busy for uid, record in newest.items()}


def deletion_costs(pods: Sequence[WorkerPod], busy: Mapping[str, int]) -> dict[str, int | None]:
    """The cost each pod (by name) should carry: its running tasks when it runs any, else None (no annotation:
    cost 0, the cheapest, and the ReplicaSet's own ranking decides among such pods)."""
    return {pod.name: busy.get(pod.uid) or None for pod in pods}


def annotation_patches(pods: Sequence[WorkerPod], costs: Mapping[str, int | None]) -> dict[str, str | None]:
    """The annotation value to write per pod name, only where it differs from what the pod carries (None: remove
    it). An empty result means no API call at all."""
    patches: dict[str, str | None] = {}
    for pod in pods:
        want = costs.get(pod.name)
        value = None if want is None else str(want)
        if pod.cost != value:
            patches[pod.name] = value
    return patches


def ranked_outcome(pods: Sequence[WorkerPod], costs: Mapping[str, int | None], *, current: int, target: int,
                   patched: int) -> Outcome:
    """The condition after pods were ranked for a scale-in from ``current`` to ``target`` replicas."""
    busy = [pod.name for pod in pods if costs.get(pod.name)]
    change = f"before scaling from {current} to {target}"
    if not busy:
        return Outcome(True, NO_BUSY_PODS, f"{change}: no worker pod was running a task ({len(pods)} pod(s) idle "
                                           f"or without a heartbeat; {patched} annotation(s) changed)")
    return Outcome(True, BUSY_PODS_SPARED,
                   f"{change}: {len(busy)} busy pod(s) made costlier to delete than {len(pods) - len(busy)} idle "
                   f"one(s) ({DELETION_COST_ANNOTATION}; {patched} annotation(s) changed)")


def scale_in_condition(*, enabled: bool, app_name: str | None, last: Outcome | None,
                       previous: Mapping[str, Any] | None) -> Outcome:
    """The ``ScaleInSparesBusyPods`` condition now.

    Args:
        enabled: whether the operator may annotate pods (``--no-pod-deletion-cost`` turns it off).
        app_name: ``spec.worker.appName``: the fleet-store namespace the workers report into.
        last: the outcome of this operator's last scale-in of the TaskQueue, if there was one.
        previous: the condition as the TaskQueue's status has it (an earlier operator run's), if any.
    """
    if not enabled:
        return Outcome(False, DISABLED, "the operator runs with --no-pod-deletion-cost (chart value "
                                        "operator.podDeletionCost.enabled=false): a scale-in removes pods by the "
                                        "ReplicaSet's default ranking, busy or not")
    if app_name is None:
        return Outcome(False, APP_NAME_UNSET, "set spec.worker.appName to your App's name (App('...')) so the "
                                              "operator can read which worker pods are busy from their heartbeats; "
                                              "until then a scale-in removes pods busy or not")
    if last is not None:
        return last
    if previous and previous.get("reason") not in (None, DISABLED, APP_NAME_UNSET):
        return Outcome(previous.get("status") == "True", str(previous["reason"]), str(previous.get("message") or ""))
    return Outcome(True, ENABLED, "before a scale-in, worker pods running tasks are made costlier to delete than "
                                  f"idle ones ({DELETION_COST_ANNOTATION}, from the workers' heartbeats)")
