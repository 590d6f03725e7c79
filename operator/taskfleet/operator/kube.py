"""The operator's Kubernetes API calls, on the official client, with plain dicts in and out.

The only module (with ``handlers``) that imports a Kubernetes library. Every call is synchronous; the autoscaler
runs them in worker threads. API errors become ``ClusterError`` (retried) or ``InvalidResource`` (a missing Secret:
the user's to fix).
"""

from __future__ import annotations

import base64
import json
import os
import socket
from datetime import UTC, datetime
from typing import Any

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from taskfleet.errors import ClusterConflict, ClusterError, InvalidResource
from taskfleet.operator.resources import GROUP, KIND, PLURAL, VERSION, Json, SecretKeyRef, TaskQueue
from taskfleet.operator.status import timestamp

#: Seconds one API request may take before it fails (and is retried on the next poll).
REQUEST_TIMEOUT_S = 10.0
COMPONENT = "taskfleet-operator"
#: The client would pick JSON Patch for a dict body; our patches are JSON merge patches.
MERGE_PATCH = "application/merge-patch+json"


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
    """The calls the operator makes, on one API client."""

    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self._api = api
        self._core = kubernetes.client.CoreV1Api(api)
        self._apps = kubernetes.client.AppsV1Api(api)
        self._custom = kubernetes.client.CustomObjectsApi(api)
        self._instance = os.environ.get("HOSTNAME") or socket.gethostname()

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call]

    def serves_task_queues(self) -> bool:
        """Whether the API server serves the TaskQueue resource yet (discovery; any authenticated user may ask)."""
        try:
            found = self._call(self._custom.get_api_resources, GROUP, VERSION)
        except ClusterError as exc:
            if _status(exc) == 404:
                return False
            raise
        return any(r.get("name") == PLURAL for r in found.get("resources") or [])

    def secret_value(self, namespace: str, ref: SecretKeyRef) -> str:
        """The value of one Secret key. Raises InvalidResource when the Secret or key is missing."""
        try:
            secret = self._call(self._core.read_namespaced_secret, ref.name, namespace)
        except ClusterError as exc:
            if _status(exc) == 404:
                raise InvalidResource(f"Secret {namespace}/{ref.name} not found") from exc
            raise
        data = secret.get("data") or {}
        if ref.key not in data:
            raise InvalidResource(f"Secret {namespace}/{ref.name} has no key {ref.key!r}")
        return base64.b64decode(data[ref.key]).decode()

    def deployment(self, namespace: str, name: str) -> Json | None:
        """The Deployment, or None when it does not exist."""
        try:
            return self._call(self._apps.read_namespaced_deployment, name, namespace)
        except ClusterError as exc:
            if _status(exc) == 404:
                return None
            raise

    def create_deployment(self, body: Json) -> None:
        self._call(self._apps.create_namespaced_deployment, body["metadata"]["namespace"], body)

    def replace_deployment(self, body: Json) -> None:
        meta = body["metadata"]
        self._call(self._apps.replace_namespaced_deployment, meta["name"], meta["namespace"], body)

    def scale_deployment(self, namespace: str, name: str, replicas: int) -> None:
        """Set the Deployment's replicas through its ``scale`` subresource (touches nothing else)."""
        self._call(self._apps.patch_namespaced_deployment_scale, name, namespace, {"spec": {"replicas": replicas}},
                   content_type=MERGE_PATCH)

    def patch_status(self, namespace: str, name: str, status: Json) -> None:
        """Merge ``status`` into the TaskQueue's status subresource."""
        self._call(self._custom.patch_namespaced_custom_object_status, GROUP, VERSION, namespace, PLURAL, name,
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
        self._call(self._core.create_namespaced_event, tq.namespace, body)

    def pods(self, namespace: str, selector: str) -> list[Json]:
        """The pods matching a label selector (a worker Deployment's, to rank them before a scale-in)."""
        return list(self._call(self._core.list_namespaced_pod, namespace, label_selector=selector).get("items") or [])

    def annotate_pod(self, namespace: str, name: str, annotations: dict[str, str | None]) -> None:
        """Merge ``annotations`` into the pod's (a None value removes that annotation)."""
        self._call(self._core.patch_namespaced_pod, name, namespace, {"metadata": {"annotations": annotations}},
                   content_type=MERGE_PATCH)

    def _call(self, method: Any, *args: Any, content_type: str | None = None, **params: Any) -> Json:
        options: dict[str, Any] = {"_preload_content": False, "_request_timeout": REQUEST_TIMEOUT_S, **params}
        if content_type is not None:
            options["_content_type"] = content_type
        try:
            response = method(*args, **options)
        except ApiException as exc:
            raise (ClusterConflict if exc.status == 409 else ClusterError)(_describe(exc)) from exc
        except (OSError, urllib3.exceptions.HTTPError, kubernetes.client.exceptions.OpenApiException) as exc:
            raise ClusterError(f"Kubernetes API unreachable: {exc}") from exc
        data = response.data
        return json.loads(data) if data else {}


def forbidden(exc: ClusterError) -> bool:
    """Whether the API server refused the call for lack of RBAC (403), rather than failing it."""
    return _status(exc) == 403


def _status(exc: ClusterError) -> int | None:
    cause = exc.__cause__
    return cause.status if isinstance(cause, ApiException) else None


def _describe(exc: ApiException) -> str:
    """The API server's own message (``Status.message``) when there is one."""
    try:
        message = json.loads(exc.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return f"Kubernetes API {exc.status} {exc.reason}: {message or exc.body or ''}".strip()
