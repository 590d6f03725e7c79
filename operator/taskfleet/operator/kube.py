"""The operator's Kubernetes API calls, on the official client, with plain dicts in and out.

The only module (with ``handlers``) that imports a Kubernetes library. Every call is synchronous; the autoscaler
runs them in worker threads. API errors become ``ClusterError`` (retried) or ``InvalidResource`` (a missing Secret:
the user's to fix).

Reads of Deployments and Secrets go through informers (``cache.py``), not one GET per TaskQueue per poll:

- worker Deployments: one list + watch selected on the operator's ``managed-by`` label, cluster-wide with
  ``--all-namespaces``, else one per namespace that has a TaskQueue (started on its first read);
- Secrets: one watch per Secret a TaskQueue names, with a ``metadata.name`` field selector, so only those Secrets
  ever reach the operator (memory, and nothing else is read); a Secret nobody read for ``SECRET_IDLE_S`` is
  dropped. Its first state comes from a GET, so RBAC needs ``get`` and ``watch`` on Secrets but never ``list``.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import functools
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from taskfleet.errors import ClusterConflict, ClusterError, InvalidResource, api_server_message
from taskfleet.operator.cache import Gone, Informer
from taskfleet.operator.manifests import MANAGER
from taskfleet.operator.resources import GROUP, KIND, PLURAL, VERSION, Json, SecretKeyRef, TaskQueue
from taskfleet.operator.status import timestamp

#: Seconds one API request may take before it fails (and is retried on the next poll).
REQUEST_TIMEOUT_S = 10.0
COMPONENT = "taskfleet-operator"
#: The client would pick JSON Patch for a dict body; our patches are JSON merge patches.
MERGE_PATCH = "application/merge-patch+json"
#: Seconds the API server keeps one watch open before the informer resumes it (a fresh request; no re-list).
WATCH_TIMEOUT_S = 300
#: A Secret no poll read for this many seconds is dropped from memory and its watch ended.
SECRET_IDLE_S = 900.0
#: Connections kept to the API server for watches: one per watched Secret and per Deployment scope.
WATCH_CONNECTIONS = 512
#: The worker Deployments the operator made (manifests.labels); nothing else is watched.
DEPLOYMENT_SELECTOR = f"app.kubernetes.io/managed-by={MANAGER}"


def load_config() -> kubernetes.client.ApiClient:
    """An API client from the pod's service account, else from ``KUBECONFIG`` / ``~/.kube/config``."""
    config = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=config)  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        try:
            kubernetes.config.load_kube_config(client_configuration=config)  # type: ignore[no-untyped-call]
        except (kubernetes.config.ConfigException, OSError) as exc:
            raise ClusterError(f"no Kubernetes credentials: not in a pod, and no usable kubeconfig ({exc})") from exc
    return kubernetes.client.ApiClient(config)


class Kube:
    """The calls the operator makes, on one API client. ``all_namespaces``: watch worker Deployments with one
    cluster-wide watch (the operator's RBAC is a ClusterRole) rather than one per namespace."""

    def __init__(self, api: kubernetes.client.ApiClient, *, all_namespaces: bool = False) -> None:
        self._api = api
        self._core = kubernetes.client.CoreV1Api(api)
        self._apps = kubernetes.client.AppsV1Api(api)
        self._custom = kubernetes.client.CustomObjectsApi(api)
        self._coordination = kubernetes.client.CoordinationV1Api(api)
        watch_config = copy.copy(api.configuration)
        watch_config.connection_pool_maxsize = WATCH_CONNECTIONS
        self._watch_api = kubernetes.client.ApiClient(watch_config)
        self._all_namespaces = all_namespaces
        self._instance = os.environ.get("HOSTNAME") or socket.gethostname()
        self._informers_lock = threading.Lock()
        self._deployments: dict[str, Informer] = {}  # by namespace; "" is the cluster-wide one
        self._secrets: dict[tuple[str, str], Informer] = {}

    def close(self) -> None:
        with self._informers_lock:
            informers = [*self._deployments.values(), *self._secrets.values()]
            self._deployments, self._secrets = {}, {}
        for informer in informers:
            informer.stop()
        self._api.close()  # type: ignore[no-untyped-call]
        self._watch_api.close()  # type: ignore[no-untyped-call]

    def informers(self) -> list[Informer]:
        """The informers running now (the scale benchmark counts their requests)."""
        with self._informers_lock:
            return [*self._deployments.values(), *self._secrets.values()]

    def serves_task_queues(self) -> bool:
        """Whether the API server serves the TaskQueue resource yet (discovery; any authenticated user may ask)."""
        try:
            found = self.call(self._custom.get_api_resources, GROUP, VERSION)
        except ClusterError as exc:
            if _status(exc) == 404:
                return False
            raise
        return any(r.get("name") == PLURAL for r in found.get("resources") or [])

    def list_task_queues(self, namespace: str | None, *, limit: int) -> list[Json]:
        """Up to ``limit`` TaskQueues of ``namespace`` (None: every namespace): the list the operator's watch starts
        with, so an answer proves the readiness check may do what the watch does."""
        if namespace is None:
            method = functools.partial(self._custom.list_cluster_custom_object, limit=limit)
            found = self.call(method, GROUP, VERSION, PLURAL)
        else:
            method = functools.partial(self._custom.list_namespaced_custom_object, limit=limit)
            found = self.call(method, GROUP, VERSION, namespace, PLURAL)
        return list(found.get("items") or [])

    def secret_value(self, namespace: str, ref: SecretKeyRef) -> str:
        """The value of one Secret key, from the Secret's watch. Raises InvalidResource when the Secret or key is
        missing, ClusterError when the Secret cannot be read (yet)."""
        secret = self._secret_informer(namespace, ref.name).get(namespace, ref.name)
        if secret is None:
            raise InvalidResource(f"Secret {namespace}/{ref.name} not found")
        data = secret.get("data") or {}
        if ref.key not in data:
            raise InvalidResource(f"Secret {namespace}/{ref.name} has no key {ref.key!r}")
        return base64.b64decode(data[ref.key]).decode()

    def deployment(self, namespace: str, name: str) -> Json | None:
        """The worker Deployment (from the watch), or None when it does not exist."""
        return self._deployment_informer(namespace).get(namespace, name)

    def pods(self, namespace: str, selector: str) -> list[Json]:
        """The pods matching the label ``selector`` (a worker Deployment's), to tell why they are not ready."""
        method = functools.partial(self._core.list_namespaced_pod, label_selector=selector)
        return list(self.call(method, namespace).get("items") or [])

    def create_deployment(self, body: Json) -> None:
        meta = body["metadata"]
        self._write_deployment(meta["namespace"], meta["name"], self._apps.create_namespaced_deployment,
                               meta["namespace"], body)

    def replace_deployment(self, body: Json) -> None:
        meta = body["metadata"]
        self._write_deployment(meta["namespace"], meta["name"], self._apps.replace_namespaced_deployment,
                               meta["name"], meta["namespace"], body)

    def _write_deployment(self, namespace: str, name: str, method: Any, *args: Any) -> None:
        """Write, then store what the API server returned; on a conflict, the cache was behind: refresh the entry
        with one GET so the retry starts from the truth."""
        informer = self._deployment_informer(namespace)
        try:
            informer.remember(self.call(method, *args))
        except ClusterConflict:
            try:
                informer.remember(self.call(self._apps.read_namespaced_deployment, name, namespace))
            except ClusterError as exc:
                if _status(exc) == 404:
                    informer.forget(namespace, name)
            raise

    def scale_deployment(self, namespace: str, name: str, replicas: int) -> None:
        """Set the Deployment's replicas through its ``scale`` subresource (touches nothing else)."""
        self.call(self._apps.patch_namespaced_deployment_scale, name, namespace, {"spec": {"replicas": replicas}},
                   content_type=MERGE_PATCH)

    def patch_status(self, namespace: str, name: str, status: Json) -> None:
        """Merge ``status`` into the TaskQueue's status subresource."""
        self.call(self._custom.patch_namespaced_custom_object_status, GROUP, VERSION, namespace, PLURAL, name,
                   {"status": status}, content_type=MERGE_PATCH)

    def event(self, tq: TaskQueue, reason: str, message: str, *, warning: bool = False) -> None:
        """Record a Kubernetes Event on the TaskQueue (``kubectl describe tq`` shows it)."""
        now = timestamp(datetime.now(UTC))
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{tq.name}.", "namespace": tq.namespace},
            "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": tq.name,
                               "namespace": tq.namespace, "uid": tq.uid},
            "reason": reason, "message": message[:1024], "type": "Warning" if warning else "Normal",
            "source": {"component": COMPONENT}, "reportingComponent": f"{GROUP}/operator",
            "reportingInstance": self._instance, "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        self.call(self._core.create_namespaced_event, tq.namespace, body)

    def annotate_pod(self, namespace: str, name: str, annotations: dict[str, str | None]) -> None:
        """Merge ``annotations`` into the pod's (a None value removes that annotation)."""
        self.call(self._core.patch_namespaced_pod, name, namespace, {"metadata": {"annotations": annotations}},
                  content_type=MERGE_PATCH)

    def read_lease(self, namespace: str, name: str) -> Json | None:
        """The coordination.k8s.io Lease, or None when it does not exist."""
        try:
            return self.call(self._coordination.read_namespaced_lease, name, namespace)
        except ClusterError as exc:
            if _status(exc) == 404:
                return None
            raise

    def create_lease(self, body: Json) -> Json:
        """Create a Lease; ClusterConflict when another replica created it first."""
        return self.call(self._coordination.create_namespaced_lease, body["metadata"]["namespace"], body)

    def replace_lease(self, body: Json) -> Json:
        """Replace a Lease at its ``resourceVersion``; ClusterConflict when another replica wrote it meanwhile."""
        meta = body["metadata"]
        return self.call(self._coordination.replace_namespaced_lease, meta["name"], meta["namespace"], body)

    def _deployment_informer(self, namespace: str) -> Informer:
        scope = "" if self._all_namespaces else namespace
        with self._informers_lock:
            informer = self._deployments.get(scope)
            if informer is None:
                if scope:
                    source = _ApiSource(self, self._apps.list_namespaced_deployment, namespace,
                                        label_selector=DEPLOYMENT_SELECTOR)
                else:
                    source = _ApiSource(self, self._apps.list_deployment_for_all_namespaces,
                                        label_selector=DEPLOYMENT_SELECTOR)
                informer = self._deployments[scope] = Informer(
                    source, name=f"deployments {scope or '(all namespaces)'}", transform=_trim).start()
            return informer

    def _secret_informer(self, namespace: str, name: str) -> Informer:
        with self._informers_lock:
            informer = self._secrets.get((namespace, name))
            if informer is None:
                source = _ApiSource(self, self._core.list_namespaced_secret, namespace,
                                    field_selector=f"metadata.name={name}",
                                    first=lambda: self.call(self._core.read_namespaced_secret, name, namespace))
                informer = self._secrets[(namespace, name)] = Informer(
                    source, name=f"secret {namespace}/{name}", transform=_secret_data).start()
            now_s = time.monotonic()
            idle = [key for key, i in self._secrets.items() if now_s - i.last_read_s > SECRET_IDLE_S]
            for key in idle:
                self._secrets.pop(key).stop()
            return informer

    def call(self, method: Any, *args: Any, content_type: str | None = None, **params: Any) -> Json:
        """One API call with JSON out; API errors become ClusterError / ClusterConflict."""
        options: dict[str, Any] = {**params, "_preload_content": False, "_request_timeout": REQUEST_TIMEOUT_S}
        if content_type is not None:
            options["_content_type"] = content_type
        try:
            response = method(*args, **options)
        except ApiException as exc:
            error = ClusterConflict if exc.status == 409 else ClusterError
            raise error(api_server_message(exc.status, exc.reason, exc.body)) from exc
        except (OSError, urllib3.exceptions.HTTPError, kubernetes.client.exceptions.OpenApiException) as exc:
            raise ClusterError(f"Kubernetes API unreachable: {exc}") from exc
        data = response.data
        return json.loads(data) if data else {}


class _ApiSource:
    """List and watch calls for an informer, on the official client's ``list_*`` method. ``first`` replaces the
    list with one GET (a single Secret: no ``list`` permission needed); a 404 then means "no object yet"."""

    def __init__(self, kube: Kube, method: Any, *args: Any, label_selector: str | None = None,
                 field_selector: str | None = None, first: Callable[[], Json] | None = None) -> None:
        self._kube = kube
        self._method = method
        self._args = args
        self._selectors = {k: v for k, v in (("label_selector", label_selector), ("field_selector", field_selector))
                           if v is not None}
        self._first = first
        self._response: urllib3.BaseHTTPResponse | None = None

    def list(self) -> tuple[list[Json], str | None]:
        if self._first is not None:
            try:
                obj = self._first()
            except ClusterError as exc:
                if _status(exc) == 404:
                    return [], None
                raise
            return [obj], obj["metadata"].get("resourceVersion")
        found = self._kube.call(self._method, *self._args, **self._selectors)
        return list(found.get("items") or []), (found.get("metadata") or {}).get("resourceVersion")

    def watch(self, resource_version: str | None, stopped: threading.Event) -> Iterator[Json]:
        options: dict[str, Any] = {
            **self._selectors, "watch": True, "allow_watch_bookmarks": True, "timeout_seconds": WATCH_TIMEOUT_S,
            "_preload_content": False, "_request_timeout": (REQUEST_TIMEOUT_S, WATCH_TIMEOUT_S + 30),
        }
        if resource_version is not None:
            options["resource_version"] = resource_version
        try:
            response = self._method(*self._args, **options)
        except ApiException as exc:
            if exc.status == 410:
                raise Gone(api_server_message(exc.status, exc.reason, exc.body)) from exc
            raise ClusterError(api_server_message(exc.status, exc.reason, exc.body)) from exc
        except (OSError, urllib3.exceptions.HTTPError, kubernetes.client.exceptions.OpenApiException) as exc:
            raise ClusterError(f"Kubernetes API unreachable: {exc}") from exc
        self._response = response
        try:
            pending = b""
            for chunk in response.stream(amt=None, decode_content=False):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
                if stopped.is_set():
                    return
        except (OSError, urllib3.exceptions.HTTPError, ValueError) as exc:
            if not stopped.is_set():
                raise ClusterError(f"watch broken: {exc}") from exc
        finally:
            self._response = None
            response.release_conn()


    def close(self) -> None:
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):  # it may be ending by itself at the same moment
                response.shutdown()


def _trim(obj: Json) -> Json:
    """What a Deployment keeps in memory: all but ``managedFields`` (often the largest part)."""
    obj = dict(obj)
    obj["metadata"] = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    return obj


def _secret_data(obj: Json) -> Json:
    """What a Secret keeps in memory: its name, version and data (no annotations, e.g. a last-applied copy)."""
    meta = obj.get("metadata") or {}
    return {"metadata": {k: meta.get(k) for k in ("namespace", "name", "resourceVersion")},
            "data": obj.get("data") or {}}


def forbidden(exc: ClusterError) -> bool:
    """Whether the API server refused the call for lack of RBAC (403), rather than failing it."""
    return _status(exc) == 403


def _status(exc: ClusterError) -> int | None:
    cause = exc.__cause__
    return cause.status if isinstance(cause, ApiException) else None
