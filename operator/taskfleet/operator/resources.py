"""A TaskQueue resource as typed, frozen values, parsed from the object the API server hands out.

The API server has already applied the CRD's defaults and validation; this module applies the same defaults again
(an object stored under an older CRD may lack them) and rejects what the operator cannot act on with
``InvalidResource``, whose message is shown in the ``Ready`` condition.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from taskfleet.errors import ConfigurationError, InvalidResource
from taskfleet.operator.scaling import ScalingPolicy
from taskfleet.settings import QUEUE_TYPES, validate_queue_name

GROUP = "taskfleet.io"
VERSION = "v1alpha1"
PLURAL = "taskqueues"
KIND = "TaskQueue"

DEFAULT_CONCURRENCY = 2
DEFAULT_DRAIN_TIMEOUT_S = 30
#: Replicas while autoscaling is disabled and spec.replicas is unset.
DEFAULT_FIXED_REPLICAS = 1

Json = dict[str, Any]

#: Queue names starting with this are Taskfleet's own (RabbitMQ delay and dead-letter queues).
RESERVED_QUEUE_PREFIX = "taskfleet."
_URL_WITH_PASSWORD = re.compile(r"^[a-z]+://[^/@]*:[^/@]*@", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class SecretKeyRef:
    """One key of a Secret in the TaskQueue's namespace."""

    name: str
    key: str

    def env_source(self) -> Json:
        """The ``valueFrom`` of a container env var reading this key."""
        return {"secretKeyRef": {"name": self.name, "key": self.key}}


@dataclass(frozen=True, slots=True)
class BrokerRef:
    """Where the queues live: a plain URL without credentials, or a Secret key holding the URL."""

    url: str | None = None
    url_from: SecretKeyRef | None = None
    management_url_from: SecretKeyRef | None = None
    #: ``rabbitmq.queueType``: ``classic`` or ``quorum``, the workers' ``task_default_queue_type``; None: the app's.
    queue_type: str | None = None


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """The worker pods. Kubernetes-shaped fields (env, resources, affinity...) pass through to the pod as given."""

    image: str
    app: str
    #: ``appName``: the App's name (``App("billing")``), the fleet-store namespace its workers heartbeat into; the
    #: operator reads which pods are busy there before a scale-in. None: it cannot tell (pods go by default ranking).
    app_name: str | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    drain_timeout_s: int = DEFAULT_DRAIN_TIMEOUT_S
    prefetch: int | None = None
    max_tasks_per_child: int | None = None
    max_memory_per_child_mb: int | None = None
    log_level: str | None = None
    image_pull_policy: str | None = None
    args: tuple[str, ...] = ()
    env: tuple[Json, ...] = ()
    env_from: tuple[Json, ...] = ()
    resources: Json | None = None
    node_selector: Json | None = None
    tolerations: tuple[Json, ...] = ()
    affinity: Json | None = None
    service_account_name: str | None = None
    image_pull_secrets: tuple[Json, ...] = ()
    pod_annotations: Json | None = None
    pod_labels: Json | None = None


@dataclass(frozen=True, slots=True)
class TaskQueue:
    """A parsed TaskQueue resource."""

    name: str
    namespace: str
    uid: str
    generation: int
    queues: tuple[str, ...]
    broker: BrokerRef
    worker: WorkerSpec
    autoscaling: ScalingPolicy
    #: Worker replicas while autoscaling is disabled (the scale subresource's spec path).
    replicas: int = DEFAULT_FIXED_REPLICAS
    paused: bool = False

    @property
    def deployment_name(self) -> str:
        return f"{self.name}-worker"

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


def parse_task_queue(body: Mapping[str, Any]) -> TaskQueue:
    """``body`` (a TaskQueue object as JSON) as a ``TaskQueue``.

    Raises:
        InvalidResource: a missing or malformed field, with its path in the message.
    """
    meta = _obj(body, "metadata")
    spec = _obj(body, "spec")
    queues = spec.get("queues")
    if not isinstance(queues, list) or not queues:
        raise InvalidResource("spec.queues: list at least one queue")
    try:
        parsed_queues = tuple(validate_queue_name(q) for q in queues)
    except ConfigurationError as exc:
        raise InvalidResource(f"spec.queues: {exc}") from exc
    reserved = [q for q in parsed_queues if q.startswith(RESERVED_QUEUE_PREFIX)]
    if reserved:
        raise InvalidResource(
            f"spec.queues: {reserved[0]!r}: names starting with {RESERVED_QUEUE_PREFIX!r} are reserved")
    replicas = spec.get("replicas")
    return TaskQueue(
        name=_str(meta, "name", "metadata"),
        namespace=_str(meta, "namespace", "metadata"),
        uid=_str(meta, "uid", "metadata"),
        generation=int(meta.get("generation") or 0),
        queues=parsed_queues,
        broker=_broker(_obj(spec, "broker", "spec")),
        worker=_worker(_obj(spec, "worker", "spec")),
        autoscaling=_autoscaling(spec.get("autoscaling") or {}),
        replicas=DEFAULT_FIXED_REPLICAS if replicas is None else _int_value(replicas, "spec.replicas", minimum=0),
        paused=_bool(spec, "paused", "spec", default=False),
    )


def _broker(raw: Mapping[str, Any]) -> BrokerRef:
    url = raw.get("url")
    url_from = _secret_source(raw.get("urlFrom"), "spec.broker.urlFrom")
    if (url is None) == (url_from is None):
        raise InvalidResource("spec.broker: set exactly one of url or urlFrom")
    if url is not None and (not isinstance(url, str) or not url):
        raise InvalidResource("spec.broker.url: must be a non-empty string")
    if url is not None and _URL_WITH_PASSWORD.match(url):
        raise InvalidResource("spec.broker.url: must not carry a password; put the URL in a Secret and use urlFrom")
    return BrokerRef(
        url=url,
        url_from=url_from,
        management_url_from=_secret_source(raw.get("managementUrlFrom"), "spec.broker.managementUrlFrom"),
        queue_type=_queue_type(raw.get("rabbitmq")),
    )


def _queue_type(raw: Any) -> str | None:
    if raw is None:
        return None
    queue_type = raw.get("queueType") if isinstance(raw, Mapping) else None
    if queue_type is None:
        return None
    if queue_type not in QUEUE_TYPES:
        raise InvalidResource(f"spec.broker.rabbitmq.queueType: must be one of {', '.join(QUEUE_TYPES)}, "
                              f"not {queue_type!r}")
    return str(queue_type)


def _secret_source(raw: Any, path: str) -> SecretKeyRef | None:
    if raw is None:
        return None
    ref = raw.get("secretKeyRef") if isinstance(raw, Mapping) else None
    if not isinstance(ref, Mapping):
        raise InvalidResource(f"{path}: needs secretKeyRef with name and key")
    return SecretKeyRef(name=_str(ref, "name", f"{path}.secretKeyRef"), key=_str(ref, "key", f"{path}.secretKeyRef"))


def _worker(raw: Mapping[str, Any]) -> WorkerSpec:
    path = "spec.worker"
    return WorkerSpec(
        image=_str(raw, "image", path),
        app=_str(raw, "app", path),
        app_name=_str(raw, "appName", path) if raw.get("appName") is not None else None,
        concurrency=_int(raw, "concurrency", path, DEFAULT_CONCURRENCY, minimum=1),
        drain_timeout_s=_int(raw, "drainTimeoutSeconds", path, DEFAULT_DRAIN_TIMEOUT_S, minimum=1),
        prefetch=_optional_int(raw, "prefetch", path),
        max_tasks_per_child=_optional_int(raw, "maxTasksPerChild", path),
        max_memory_per_child_mb=_optional_int(raw, "maxMemoryPerChildMB", path),
        log_level=raw.get("logLevel"),
        image_pull_policy=raw.get("imagePullPolicy"),
        args=tuple(str(a) for a in raw.get("args") or ()),
        # Kubernetes-shaped fields are copied: the parsed value never shares state with the watched body.
        env=_copies(raw, "env"),
        env_from=_copies(raw, "envFrom"),
        resources=copy.deepcopy(raw.get("resources")),
        node_selector=copy.deepcopy(raw.get("nodeSelector")),
        tolerations=_copies(raw, "tolerations"),
        affinity=copy.deepcopy(raw.get("affinity")),
        service_account_name=raw.get("serviceAccountName") or None,
        image_pull_secrets=_copies(raw, "imagePullSecrets"),
        pod_annotations=copy.deepcopy(raw.get("podAnnotations")),
        pod_labels=copy.deepcopy(raw.get("podLabels")),
    )


def _autoscaling(raw: Mapping[str, Any]) -> ScalingPolicy:
    path = "spec.autoscaling"
    up = raw.get("scaleUp") or {}
    down = raw.get("scaleDown") or {}
    defaults = ScalingPolicy()
    try:
        return ScalingPolicy(
            enabled=_bool(raw, "enabled", path, default=True),
            min_replicas=_int(raw, "minReplicas", path, defaults.min_replicas, minimum=0),
            max_replicas=_int(raw, "maxReplicas", path, defaults.max_replicas, minimum=1),
            target_per_replica=_int(raw, "targetPerReplica", path, defaults.target_per_replica, minimum=1),
            activation_threshold=_int(raw, "activationThreshold", path, defaults.activation_threshold, minimum=1),
            poll_interval_s=_int(raw, "pollIntervalSeconds", path, int(defaults.poll_interval_s), minimum=1),
            scale_up_max_step=_optional_int(up, "maxStep", f"{path}.scaleUp"),
            scale_down_stabilization_s=_int(down, "stabilizationSeconds", f"{path}.scaleDown",
                                            int(defaults.scale_down_stabilization_s), minimum=0),
            scale_down_max_step=_optional_int(down, "maxStep", f"{path}.scaleDown"),
        )
    except InvalidResource:
        raise
    except ConfigurationError as exc:
        raise InvalidResource(f"{path}: {exc}") from exc


def _copies(raw: Mapping[str, Any], field: str) -> tuple[Json, ...]:
    return tuple(copy.deepcopy(dict(item)) for item in raw.get(field) or ())


def _bool(raw: Mapping[str, Any], field: str, path: str, *, default: bool) -> bool:
    value = raw.get(field, default)
    if not isinstance(value, bool):
        raise InvalidResource(f"{path}.{field}: must be true or false, got {value!r}")
    return value


def _obj(raw: Mapping[str, Any], field: str, path: str = "") -> Mapping[str, Any]:
    value = raw.get(field)
    if not isinstance(value, Mapping):
        raise InvalidResource(f"{path + '.' if path else ''}{field}: missing or not an object")
    return value


def _str(raw: Mapping[str, Any], field: str, path: str) -> str:
    value = raw.get(field)
    if not isinstance(value, str) or not value:
        raise InvalidResource(f"{path}.{field}: missing or empty")
    return value


def _int(raw: Mapping[str, Any], field: str, path: str, default: int, *, minimum: int) -> int:
    value = raw.get(field)
    return default if value is None else _int_value(value, f"{path}.{field}", minimum=minimum)


def _optional_int(raw: Mapping[str, Any], field: str, path: str) -> int | None:
    value = raw.get(field)
    return None if value is None else _int_value(value, f"{path}.{field}", minimum=1)


def _int_value(value: Any, path: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidResource(f"{path}: must be an integer >= {minimum}, got {value!r}")
    return value
