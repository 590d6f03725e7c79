"""The kopf handlers: thin glue between watch events and the pure builders / the autoscaler.

- create / update (of ``spec``) / resume: apply the worker Deployment (``reconcile.ensure_deployment``).
- every watch event: keep the autoscaler's loops in step with the TaskQueues that exist.

There is no deletion handler, daemon or timer, so kopf puts no finalizer on TaskQueues: deleting one never hangs,
even while the operator is down, and its Deployment goes by garbage collection (owner reference).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kopf

from taskfleet.errors import ClusterError, InvalidResource
from taskfleet.operator.autoscaler import Autoscaler
from taskfleet.operator.kube import Kube
from taskfleet.operator.metrics import OperatorMetrics
from taskfleet.operator.reconcile import apply_deployment
from taskfleet.operator.resources import GROUP, PLURAL, VERSION, parse_task_queue
from taskfleet.operator.status import invalid_status

#: Seconds before kopf retries a reconcile that failed on the API server.
RETRY_DELAY_S = 5.0


def build_registry(kube: Kube, autoscaler: Autoscaler, metrics: OperatorMetrics) -> kopf.OperatorRegistry:
    """A kopf registry with the operator's handlers bound to ``kube``, ``autoscaler`` and ``metrics``."""
    registry = kopf.OperatorRegistry()
    resource = (GROUP, VERSION, PLURAL)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.resume(*resource, registry=registry)
    @kopf.on.create(*resource, registry=registry)
    @kopf.on.update(*resource, field="spec", registry=registry)
    def reconcile(body: kopf.Body, **_: Any) -> None:
        reconcile_deployment(kube, metrics, body)

    @kopf.on.event(*resource, registry=registry)
    async def watch(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        # Being deleted counts as gone: with foreground deletion the Deployment goes first, and a poll must not
        # bring it back.
        if event.get("type") == "DELETED" or body.metadata.deletion_timestamp:
            await autoscaler.forget(body.metadata.namespace or "", body.metadata.name or "")
        else:
            autoscaler.observe(dict(body))

    @kopf.on.cleanup(registry=registry)
    async def stop_autoscaler(**_: Any) -> None:
        await autoscaler.close()

    return registry


def reconcile_deployment(kube: Kube, metrics: OperatorMetrics, body: kopf.Body) -> None:
    """Apply the worker Deployment of ``body``; an invalid TaskQueue gets ``Ready=False`` and an Event, and is not
    retried until it changes."""
    if body.metadata.deletion_timestamp:
        return
    generation = int(body.metadata.get("generation") or 0)
    try:
        apply_deployment(kube, metrics, parse_task_queue(body))
    except InvalidResource as exc:
        namespace, name = body.metadata.namespace or "", body.metadata.name or ""
        kube.patch_status(namespace, name, invalid_status(generation, str(exc), previous=dict(body.status),
                                                          now=datetime.now(UTC)))
        raise kopf.PermanentError(str(exc)) from exc
    except ClusterError as exc:
        raise kopf.TemporaryError(str(exc), delay=RETRY_DELAY_S) from exc
