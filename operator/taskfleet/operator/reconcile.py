"""Applying a TaskQueue's worker Deployment: create it, replace it when the TaskQueue changed, else leave it.

Idempotent, so the kopf handlers (create/update/resume) and every autoscaler poll (self-healing a deleted or
hand-edited Deployment) can call it. The replica count of an existing Deployment is kept: it is the autoscaler's.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from taskfleet.errors import ClusterConflict, ClusterError, InvalidResource
from taskfleet.operator.kube import Kube
from taskfleet.operator.manifests import HASH_ANNOTATION, worker_deployment
from taskfleet.operator.metrics import OperatorMetrics
from taskfleet.operator.resources import TaskQueue

#: Attempts of a reconcile that keeps losing write races (the kopf handler and a poll may apply at once).
CONFLICT_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Applied:
    """What ``ensure_deployment`` did (``created``, ``updated`` or ``unchanged``), the replicas asked for now, and
    the pods ready (the Deployment's ``status.readyReplicas``, read with it: no extra request)."""

    action: str
    replicas: int
    ready_replicas: int = 0


def initial_replicas(tq: TaskQueue) -> int:
    """Replicas of a new Deployment; the autoscaler takes over from its first poll."""
    if tq.paused:
        return 0
    if not tq.autoscaling.enabled:
        return tq.replicas
    return tq.autoscaling.min_replicas


def ensure_deployment(kube: Kube, tq: TaskQueue) -> Applied:
    """Make the worker Deployment match ``tq``.

    Raises:
        InvalidResource: a Deployment of that name exists and belongs to something else (it is never taken over).
        ClusterError: the API server refused or failed.
    """
    existing = kube.deployment(tq.namespace, tq.deployment_name)
    if existing is None:
        replicas = initial_replicas(tq)
        kube.create_deployment(worker_deployment(tq, replicas=replicas))
        return Applied("created", replicas)
    owners = existing["metadata"].get("ownerReferences") or []
    if not any(o.get("uid") == tq.uid and o.get("controller") for o in owners):
        raise InvalidResource(
            f"Deployment {tq.namespace}/{tq.deployment_name} exists and is not controlled by this TaskQueue; "
            "rename the TaskQueue or delete that Deployment"
        )
    replicas = int(existing["spec"].get("replicas", 0))
    ready = int((existing.get("status") or {}).get("readyReplicas") or 0)
    wanted = worker_deployment(tq, replicas=replicas)
    if (existing["metadata"].get("annotations") or {}).get(HASH_ANNOTATION) == \
            wanted["metadata"]["annotations"][HASH_ANNOTATION]:
        return Applied("unchanged", replicas, ready)
    wanted["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
    # Keep annotations others put there (e.g. the Deployment controller's revision).
    wanted["metadata"]["annotations"] = {**existing["metadata"].get("annotations", {}),
                                         **wanted["metadata"]["annotations"]}
    kube.replace_deployment(wanted)
    return Applied("updated", replicas, ready)


def apply_deployment(kube: Kube, metrics: OperatorMetrics, tq: TaskQueue) -> Applied:
    """``ensure_deployment``, again after a lost write race, counted in metrics and told in an Event on a change.

    Raises:
        InvalidResource: as ``ensure_deployment``.
        ClusterError: the API server refused or failed (or the races never ended).
    """
    for attempt in range(1, CONFLICT_ATTEMPTS + 1):
        try:
            applied = ensure_deployment(kube, tq)
            break
        except ClusterConflict:
            if attempt == CONFLICT_ATTEMPTS:
                metrics.reconciles.labels("error").inc()
                raise
        except InvalidResource:
            metrics.reconciles.labels("invalid").inc()
            raise
        except ClusterError:
            metrics.reconciles.labels("error").inc()
            raise
    metrics.reconciles.labels(applied.action).inc()
    if applied.action != "unchanged":
        with contextlib.suppress(ClusterError):  # an Event is a courtesy; the Deployment is applied
            kube.event(tq, "Reconciled", f"worker Deployment {tq.deployment_name} {applied.action}")
    return applied
