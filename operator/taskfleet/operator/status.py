"""Pure builders of a TaskQueue's ``.status``: live numbers for ``kubectl get taskqueues`` and four conditions.

- ``BrokerReachable``: the last poll read the queue depth (False: ``Unreachable`` or ``SecretMissing``).
- ``Scaling``: True while the autoscaler acts on live numbers; the reason is the last decision (``ScaledUp``,
  ``ScaledDown``, ``Stabilizing``, ``Stable``) or why it does not act (``Paused``, ``AutoscalingDisabled``,
  ``NoMetrics``).
- ``WorkersReady``: every worker pod asked for is ready (else the worst reason a pod gives: ``worker_pods.py``);
  ``workers`` (``1/3``) is the ``WORKERS`` column.
- ``Ready``: the worker Deployment is reconciled and the broker reachable (else ``InvalidSpec``,
  ``DeploymentFailed`` or ``BrokerUnreachable``).

Messages never carry a credential: broker errors are masked before they get here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from taskfleet.operator.resources import Json, TaskQueue
from taskfleet.operator.scaling import Decision, Load
from taskfleet.operator.worker_pods import WorkersVerdict, workers_column

#: How Kubernetes writes times (RFC 3339, UTC, whole seconds).
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
ACTIVE_REASONS = frozenset({"ScaledUp", "ScaledDown", "Stabilizing", "Stable"})


@dataclass(frozen=True, slots=True)
class Observation:
    """What one poll saw and did."""

    broker_type: str | None
    load: Load | None
    delayed: int | None
    dead: int | None
    #: Why the load is unknown (masked), and the condition reason for it.
    broker_error: str | None
    broker_error_reason: str
    #: Why the Deployment could not be reconciled, if it could not.
    deployment_error: str | None
    replicas: int
    decision: Decision
    scaled: bool
    #: The Deployment's ready pods (``status.readyReplicas``) and what they say, when the poll read them.
    ready_replicas: int | None = None
    workers: WorkersVerdict | None = None


def timestamp(now: datetime) -> str:
    """RFC 3339 in UTC with second precision, as Kubernetes writes times."""
    return now.strftime(TIME_FORMAT)


def condition(
    previous: Sequence[Mapping[str, Any]], type_: str, status: bool, reason: str, message: str, *,
    now: datetime, generation: int,
) -> Json:
    """A condition; ``lastTransitionTime`` moves only when its status changes."""
    value = "True" if status else "False"
    old = next((c for c in previous if c.get("type") == type_), None)
    since = old["lastTransitionTime"] if old and old.get("status") == value and old.get("lastTransitionTime") \
        else timestamp(now)
    return {"type": type_, "status": value, "reason": reason, "message": message[:1024],
            "lastTransitionTime": since, "observedGeneration": generation}


def polled_status(tq: TaskQueue, seen: Observation, *, previous: Mapping[str, Any], now: datetime,
                  selector: str) -> Json:
    """The status after a poll, as a merge patch (``None`` removes a number that is no longer known)."""
    conditions = previous.get("conditions") or []
    reachable = seen.load is not None
    ready = reachable and seen.deployment_error is None
    if seen.deployment_error is not None:
        ready_reason, ready_message = "DeploymentFailed", seen.deployment_error
    elif not reachable:
        ready_reason, ready_message = "BrokerUnreachable", seen.broker_error or "queue depth unknown"
    else:
        ready_reason, ready_message = "Reconciled", f"{seen.replicas} worker replicas for {len(tq.queues)} queue(s)"

    def cond(type_: str, status: bool, reason: str, message: str) -> Json:
        return condition(conditions, type_, status, reason, message, now=now, generation=tq.generation)

    status: Json = {
        "queues": ",".join(tq.queues),
        "brokerType": seen.broker_type,
        "ready": seen.load.ready if seen.load else None,
        "inFlight": seen.load.in_flight if seen.load else None,
        "due": seen.load.due if seen.load else None,
        "delayed": seen.delayed,
        "dead": seen.dead,
        "replicas": seen.replicas,
        "desiredReplicas": seen.decision.replicas,
        "selector": selector,
        "lastPollTime": timestamp(now),
        "lastScaleTime": timestamp(now) if seen.scaled else previous.get("lastScaleTime"),
        "observedGeneration": tq.generation,
        "conditions": [
            cond("Ready", ready, ready_reason, ready_message),
            cond("BrokerReachable", reachable, "Connected" if reachable else seen.broker_error_reason,
                 f"read the depth of {len(tq.queues)} queue(s)" if reachable else seen.broker_error or ""),
            cond("Scaling", seen.decision.reason in ACTIVE_REASONS, seen.decision.reason, seen.decision.message),
        ],
    }
    if seen.workers is not None and seen.ready_replicas is not None:
        status["readyReplicas"] = seen.ready_replicas
        status["workers"] = workers_column(seen.ready_replicas, seen.replicas)
        status["conditions"].append(cond("WorkersReady", seen.workers.ready, seen.workers.reason,
                                         seen.workers.message))
    return status


def invalid_status(generation: int, message: str, *, previous: Mapping[str, Any], now: datetime) -> Json:
    """The status of a TaskQueue the operator cannot act on (its workers are left as they are)."""
    conditions = list(previous.get("conditions") or [])
    ready = condition(conditions, "Ready", False, "InvalidSpec", message, now=now, generation=generation)
    return {"observedGeneration": generation,
            "conditions": [ready, *(c for c in conditions if c.get("type") != "Ready")]}


def status_changed(previous: Mapping[str, Any], status: Mapping[str, Any], *, now: datetime,
                   heartbeat_s: float) -> bool:
    """Whether ``status`` says something ``previous`` does not, or ``previous`` is older than ``heartbeat_s``
    (its ``lastPollTime``). A poll that changes nothing then costs the API server no write."""
    last = previous.get("lastPollTime")
    if not last:
        return True
    try:
        age_s = (now - datetime.strptime(last, TIME_FORMAT).replace(tzinfo=UTC)).total_seconds()
    except ValueError:
        return True
    if age_s >= heartbeat_s:
        return True
    ignored = {"lastPollTime"}
    return any(previous.get(key) != value for key, value in status.items() if key not in ignored)
