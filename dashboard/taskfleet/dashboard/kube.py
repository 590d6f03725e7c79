"""TaskQueues and their Events as the dashboard reads them: ``KubeReader``, the ``model.KubeSource`` on the official
Kubernetes client, with plain JSON in and the model's views out.

The only dashboard module that imports ``kubernetes``. It only reads: TaskQueues (spec and status) and core/v1
Events, which is all the chart's dashboard ClusterRole or Roles grant (``get``/``list``/``watch`` on ``taskqueues``
and ``events``). It never reads a Secret, and a view carries no broker URL, so nothing secret reaches a page.
API failures become ``ClusterError`` (``forbidden`` tells a refusal by RBAC from an outage).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from taskfleet.dashboard.model import KubeEvent, TaskQueueView
from taskfleet.errors import ClusterError, api_server_message

GROUP = "taskfleet.io"
VERSION = "v1alpha1"
PLURAL = "taskqueues"
KIND = "TaskQueue"
#: Seconds one API request may take before it fails with ClusterError (the page then says so).
REQUEST_TIMEOUT_S = 10.0
#: TaskQueues per list request; the reader follows ``continue`` tokens, so this bounds one answer, not the total.
PAGE_SIZE = 500
#: The condition fields a view keeps (``lastTransitionTime`` and ``observedGeneration`` are the operator's).
CONDITION_FIELDS = ("type", "status", "reason", "message")

Json = dict[str, Any]


def load_config(*, kubeconfig: str | None = None) -> kubernetes.client.ApiClient:
    """An API client from ``kubeconfig`` (a file) when given, else the pod's service account, else ``KUBECONFIG`` /
    ``~/.kube/config``.

    Raises:
        ClusterError: none of them is usable.
    """
    config = kubernetes.client.Configuration()
    if kubeconfig is None:
        try:
            kubernetes.config.load_incluster_config(client_configuration=config)  # type: ignore[no-untyped-call]
            return kubernetes.client.ApiClient(config)
        except kubernetes.config.ConfigException:
            pass
    try:
        kubernetes.config.load_kube_config(config_file=kubeconfig,  # type: ignore[no-untyped-call]
                                           client_configuration=config)
    except (kubernetes.config.ConfigException, OSError) as exc:
        where = kubeconfig or "not in a pod, and no usable kubeconfig"
        raise ClusterError(f"no Kubernetes credentials: {where} ({exc})") from exc
    return kubernetes.client.ApiClient(config)


class KubeReader:
    """Reads TaskQueues and their Events on one API client. ``namespaces``: the namespaces to read (a Role in each,
    as the chart grants when the operator watches only those); None reads every namespace (a ClusterRole)."""

    def __init__(self, api: kubernetes.client.ApiClient, *, namespaces: Sequence[str] | None = None) -> None:
        self._api = api
        self._core = kubernetes.client.CoreV1Api(api)
        self._custom = kubernetes.client.CustomObjectsApi(api)
        self._namespaces = None if namespaces is None else list(dict.fromkeys(namespaces))

    @classmethod
    def connect(cls, *, namespaces: Sequence[str] | None = None, kubeconfig: str | None = None) -> KubeReader:
        """A reader on ``kubeconfig``, else the pod's service account, else the default kubeconfig
        (``load_config``)."""
        return cls(load_config(kubeconfig=kubeconfig), namespaces=namespaces)

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call]

    def task_queues(self) -> list[TaskQueueView]:
        """Every TaskQueue in scope, sorted by namespace and name."""
        if self._namespaces is None:
            items = list(self._pages(self._custom.list_cluster_custom_object, GROUP, VERSION, PLURAL))
        else:
            items = [item for namespace in self._namespaces
                     for item in self._pages(self._custom.list_namespaced_custom_object, GROUP, VERSION, namespace,
                                             PLURAL)]
        views = [task_queue_view(item) for item in items]
        return sorted(views, key=lambda v: (v.namespace, v.name))

    def events(self, namespace: str, name: str, *, limit: int = 50) -> list[KubeEvent]:
        """The core/v1 Events about TaskQueue ``namespace/name`` (the operator's scaling decisions and broker
        trouble), newest first, at most ``limit``. The API server lists in storage order, so all of that one
        object's Events are read (the API server keeps them an hour by default) and the newest kept."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        selector = f"involvedObject.kind={KIND},involvedObject.name={name}"
        method = functools.partial(self._core.list_namespaced_event, field_selector=selector)
        # the field selector cannot name the API group: a TaskQueue kind of another group is dropped here
        items = [item for item in self._pages(method, namespace)
                 if (item.get("involvedObject") or {}).get("apiVersion", GROUP).split("/")[0] == GROUP]
        events = sorted((kube_event(item) for item in items), key=lambda e: e.at, reverse=True)
        return events[:limit]

    def _pages(self, method: Any, *args: Any) -> Iterator[Json]:
        """The items of a list call, following ``continue`` tokens."""
        token: str | None = None
        while True:
            params: dict[str, Any] = {"limit": PAGE_SIZE}
            if token:
                params["_continue"] = token
            found = self._call(method, *args, **params)
            yield from found.get("items") or []
            token = (found.get("metadata") or {}).get("continue")
            if not token:
                return

    def _call(self, method: Any, *args: Any, **params: Any) -> Json:
        """One API call with JSON out; every failure becomes ClusterError."""
        try:
            response = method(*args, **params, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S)
        except ApiException as exc:
            raise ClusterError(api_server_message(exc.status, exc.reason, exc.body)) from exc
        except (OSError, urllib3.exceptions.HTTPError, kubernetes.client.exceptions.OpenApiException) as exc:
            raise ClusterError(f"Kubernetes API unreachable: {exc}") from exc
        try:
            data = response.data
            return json.loads(data) if data else {}
        except ValueError as exc:
            raise ClusterError(f"Kubernetes API answered with invalid JSON: {exc}") from exc


def task_queue_view(obj: Mapping[str, Any]) -> TaskQueueView:
    """A TaskQueue object as the dashboard's view: names, queues, the autoscaling range and the operator's status.
    Pure; reads nothing of ``spec.broker`` or ``spec.worker`` (where URLs and Secret names live).

    ``min_replicas``/``max_replicas`` are the autoscaling range, None when autoscaling is off (``spec.replicas``
    then pins the count, shown as ``desired`` by the operator). Counts are None until the operator wrote them."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    autoscaling = spec.get("autoscaling") or {}
    scaled = autoscaling.get("enabled", True) is not False
    return TaskQueueView(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        queues=[str(q) for q in spec.get("queues") or []],
        replicas=_int(status.get("replicas")) or 0,
        desired=_int(status.get("desiredReplicas")),
        ready_workers=_int(status.get("readyReplicas")),
        min_replicas=_int(autoscaling.get("minReplicas")) if scaled else None,
        max_replicas=_int(autoscaling.get("maxReplicas")) if scaled else None,
        conditions=[{k: str(c[k]) for k in CONDITION_FIELDS if c.get(k) is not None}
                    for c in status.get("conditions") or [] if isinstance(c, Mapping)],
    )


def kube_event(obj: Mapping[str, Any]) -> KubeEvent:
    """A core/v1 Event as the dashboard's view. Its time is the last time it happened (``lastTimestamp``, else
    ``eventTime`` as newer reporters write it, else its creation); its count includes a series' repeats."""
    meta = obj.get("metadata") or {}
    series = obj.get("series") or {}
    when = (obj.get("lastTimestamp") or series.get("lastObservedTime") or obj.get("eventTime")
            or obj.get("firstTimestamp") or meta.get("creationTimestamp"))
    return KubeEvent(
        at=parse_time(when) if when else 0.0,
        type=str(obj.get("type") or "Normal"),
        reason=str(obj.get("reason") or ""),
        message=str(obj.get("message") or ""),
        count=_int(series.get("count")) or _int(obj.get("count")) or 1,
    )


def parse_time(text: str) -> float:
    """A Kubernetes time (RFC 3339, ``Z`` or an offset, optional fraction) as Unix seconds."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError as exc:
        raise ClusterError(f"Kubernetes API sent an unreadable time {text!r}") from exc


def forbidden(exc: ClusterError) -> bool:
    """Whether the API server refused the call for lack of RBAC (403), rather than failing it."""
    cause = exc.__cause__
    return isinstance(cause, ApiException) and cause.status == 403


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
