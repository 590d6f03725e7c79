"""Scale-in that spares busy pods: just before the autoscaler lowers a worker Deployment's replicas, read which pods
are running tasks (the workers' heartbeats in the app's fleet store, on the TaskQueue's broker) and set their
``pod-deletion-cost`` so the ReplicaSet deletes idle pods first (the decisions: ``deletion_cost``).

Best effort, always: a fleet store that cannot be read, pods that cannot be listed or patched (403 without the
chart's RBAC for it) never stop the scale-in; the ``ScaleInSparesBusyPods`` condition says what happened. The
ReplicaSet controller sees the annotations through its watch; they are written before the Deployment's replicas are,
and the replica change goes through the Deployment controller first, so the ReplicaSet normally ranks with them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from taskfleet.brokers import Broker
from taskfleet.brokers.fleet_store import FleetStore, connect_fleet_store
from taskfleet.errors import BrokerError, ClusterError, ConfigurationError
from taskfleet.fleet.records import decode_records
from taskfleet.operator.deletion_cost import (
    DELETION_COST_ANNOTATION,
    FORBIDDEN,
    HEARTBEATS_UNREADABLE,
    PODS_UNREADABLE,
    Outcome,
    annotation_patches,
    busy_tasks,
    deletion_costs,
    ranked_outcome,
    worker_pods,
)
from taskfleet.operator.kube import Kube, forbidden
from taskfleet.operator.manifests import selector_string
from taskfleet.operator.resources import TaskQueue
from taskfleet.urls import mask_secrets
from taskfleet.worker.logging import get_logger

_log = get_logger("taskfleet.operator")


@dataclass
class ScaleInState:
    """What the scale-in keeps per TaskQueue: the fleet store it reads (opened on first use, on the broker the
    autoscaler already holds) and the last outcome (the condition's)."""

    store: FleetStore | None = None
    store_key: tuple[int, str] | None = None
    last: Outcome | None = None

    def close(self) -> None:
        if self.store is not None:
            with contextlib.suppress(Exception):
                self.store.close()
        self.store, self.store_key = None, None


def spare_busy_pods(kube: Kube, state: ScaleInState, tq: TaskQueue, broker: Broker | None, *, current: int,
                    target: int) -> Outcome:
    """Rank ``tq``'s worker pods for a scale-in from ``current`` to ``target`` replicas; never raises for a
    cluster or broker failure (the outcome says it). Call only with ``0 < target < current``: scaling to zero
    removes every pod anyway."""
    app_name = tq.worker.app_name
    assert app_name is not None, "the caller checks spec.worker.appName"
    try:
        pods = worker_pods(kube.pods(tq.namespace, selector_string(tq)))
    except ClusterError as exc:
        return _cluster_failure(tq, "list", exc)
    try:
        records = decode_records(_store(state, broker, app_name).workers())
    except (BrokerError, ConfigurationError, OSError) as exc:
        state.close()  # reconnect from scratch next time
        message = mask_secrets(f"{type(exc).__name__}: {exc}")
        _log.warning("scale_in_heartbeats_unreadable", namespace=tq.namespace, taskqueue=tq.name, error=message)
        return Outcome(False, HEARTBEATS_UNREADABLE,
                       f"cannot read the workers' heartbeats (app {app_name!r}): {message}; pods were removed by "
                       f"the ReplicaSet's default ranking")
    costs = deletion_costs(pods, busy_tasks(records, namespace=tq.namespace))
    patches = annotation_patches(pods, costs)
    for name, value in patches.items():
        try:
            kube.annotate_pod(tq.namespace, name, {DELETION_COST_ANNOTATION: value})
        except ClusterError as exc:
            return _cluster_failure(tq, "patch", exc)
    outcome = ranked_outcome(pods, costs, current=current, target=target, patched=len(patches))
    _log.info("scale_in_ranked", namespace=tq.namespace, taskqueue=tq.name, replicas_from=current,
              replicas_to=target, costs={k: v for k, v in costs.items() if v}, patched=sorted(patches))
    return outcome


def _store(state: ScaleInState, broker: Broker | None, app_name: str) -> FleetStore:
    if broker is None:
        raise ConfigurationError("the broker is not connected")
    key = (id(broker), app_name)
    if state.store is None or state.store_key != key:
        state.close()
        state.store = connect_fleet_store(broker, namespace=app_name)
        state.store_key = key
    return state.store


def _cluster_failure(tq: TaskQueue, verb: str, exc: ClusterError) -> Outcome:
    _log.warning("scale_in_pods_not_ranked", namespace=tq.namespace, taskqueue=tq.name, verb=verb, error=str(exc))
    if forbidden(exc):
        return Outcome(False, FORBIDDEN,
                       f"the operator may not {verb} pods in {tq.namespace} (give it pods list + patch, the chart's "
                       f"operator.podDeletionCost.enabled): a scale-in removes pods by the ReplicaSet's default "
                       f"ranking, busy or not")
    return Outcome(False, PODS_UNREADABLE, f"cannot {verb} the worker pods: {exc}; pods were removed by the "
                                           f"ReplicaSet's default ranking")
