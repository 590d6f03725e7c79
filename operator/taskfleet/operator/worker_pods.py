"""Why a TaskQueue's worker pods are not ready, from the pods' own status: the ``WORKERS`` column (ready/desired)
and the ``WorkersReady`` condition of ``kubectl get taskqueues``, so a broken worker image shows at a glance.

Pure functions over pod dicts as the API server returns them. The operator lists a Deployment's pods only when fewer
are ready than it asks for (``readyReplicas < replicas``), so a healthy TaskQueue costs no pod reads.

The reason is the worst one any pod has, in this order: an image that cannot be pulled (``ImagePullBackOff``,
``ErrImagePull``, ``InvalidImageName``, ``ErrImageNeverPull``), a container that cannot be created
(``CreateContainerConfigError``, e.g. a missing Secret), ``CrashLoopBackOff``, ``Unschedulable``, ``Pending``
(e.g. ``ContainerCreating``), ``NotReady`` (running, readiness probe failing); else ``Starting`` (pods still being
created or terminating). The message names the pod and quotes the kubelet or the scheduler.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["WorkersVerdict", "workers_column", "workers_verdict"]

#: Container waiting reasons of an image that will not run, worst first.
IMAGE_REASONS = ("InvalidImageName", "ErrImageNeverPull", "ImagePullBackOff", "ErrImagePull")
#: Container waiting reasons of a container the kubelet cannot create or start.
CREATE_REASONS = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError")
CRASH_REASON = "CrashLoopBackOff"
#: Every reason, worst first: the condition reports the worst one any pod has.
SEVERITY = (*IMAGE_REASONS, *CREATE_REASONS, CRASH_REASON, "Unschedulable", "Pending", "NotReady", "Starting")
_MESSAGE_LIMIT = 900


@dataclass(frozen=True, slots=True)
class WorkersVerdict:
    """The ``WorkersReady`` condition: are all desired worker pods ready, and if not, the worst reason why."""

    ready: bool
    reason: str
    message: str


def workers_column(ready: int, desired: int) -> str:
    """The ``WORKERS`` printer column: ready worker pods over the replicas asked for, e.g. ``1/3``."""
    return f"{ready}/{desired}"


def workers_verdict(ready: int, desired: int, pods: Sequence[Mapping[str, Any]] | None, *,
                    pods_error: str | None = None) -> WorkersVerdict:
    """The condition from the Deployment's ready and desired replicas and, when fewer are ready, its pods
    (None: they could not be listed, ``pods_error`` says why)."""
    if ready >= desired:
        if desired == 0:
            return WorkersVerdict(True, "ScaledToZero", "no worker pods are wanted")
        return WorkersVerdict(True, "AllReady", f"{workers_column(ready, desired)} worker pods ready")
    summary = f"{ready}/{desired} worker pods ready"
    if pods is None:
        return WorkersVerdict(False, "NotReady", f"{summary} (cannot list the pods: {pods_error or 'unknown'})")
    found = [problem for pod in pods if not _terminating(pod) for problem in [_problem(pod)] if problem]
    if not found:
        live = sum(1 for pod in pods if not _terminating(pod))
        return WorkersVerdict(False, "Starting", f"{summary}; {live} of {desired} pods exist")
    reason, message = min(found, key=lambda p: SEVERITY.index(p[0]))
    same = sum(1 for r, _ in found if r == reason)
    others = f" (and {same - 1} more pod(s) alike)" if same > 1 else ""
    return WorkersVerdict(False, reason, f"{summary}; {message}{others}"[:_MESSAGE_LIMIT])


def _terminating(pod: Mapping[str, Any]) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def _problem(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    """The worst reason this pod is not ready and what to tell about it, or None when it is ready."""
    name = (pod.get("metadata") or {}).get("name", "?")
    status = pod.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    if (conditions.get("Ready") or {}).get("status") == "True":
        return None
    containers = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    waiting = [(c.get("name", "?"), (c.get("state") or {}).get("waiting") or {}, c) for c in containers]
    for wanted in (*IMAGE_REASONS, *CREATE_REASONS, CRASH_REASON):
        for container, state, full in waiting:
            if state.get("reason") == wanted:
                detail = state.get("message") or ""
                if wanted == CRASH_REASON:
                    detail = _last_exit(full) or detail
                return wanted, f"pod {name} container {container}: {wanted}" + (f": {detail}" if detail else "")
    scheduled = conditions.get("PodScheduled") or {}
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        return "Unschedulable", f"pod {name}: {scheduled.get('message') or 'no node fits'}"
    if status.get("phase", "Pending") == "Pending":
        why = next((state.get("reason") for _, state, _ in waiting if state.get("reason")), None)
        return "Pending", f"pod {name} is pending" + (f" ({why})" if why else "")
    ready = conditions.get("Ready") or {}
    return "NotReady", f"pod {name} is {status.get('phase', 'running').lower()} and not ready" + (
        f": {ready['message']}" if ready.get("message") else "")


def _last_exit(container: Mapping[str, Any]) -> str:
    """How a crash-looping container last ended, e.g. ``exited with code 78 (Error)``."""
    ended = (container.get("lastState") or {}).get("terminated") or {}
    if "exitCode" not in ended:
        return ""
    reason = f" ({ended['reason']})" if ended.get("reason") else ""
    message = f": {ended['message']}" if ended.get("message") else ""
    return f"last exited with code {ended['exitCode']}{reason}{message}"
