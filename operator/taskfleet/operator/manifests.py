"""Pure builders of what the operator applies: the worker Deployment of a TaskQueue.

Every function returns a new dict and never mutates its input. The Deployment carries a hash of its own spec
(``taskfleet.io/spec-hash``), so a reconcile writes only when the TaskQueue really changed, and the replica count is
left out of that hash: replicas belong to the autoscaler.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import orjson

from taskfleet.operator.resources import GROUP, KIND, VERSION, Json, TaskQueue
from taskfleet.settings import ENV_TASK_DEFAULT_QUEUE_TYPE

#: The worker's /healthz, /readyz and /metrics port inside the pod.
HEALTH_PORT = 8000
#: Seconds on top of the drain timeout before the kubelet sends SIGKILL: time for the worker to notice SIGTERM,
#: hand back prefetched messages and settle its last acks.
GRACE_MARGIN_S = 15
#: A non-root user the Taskfleet images create (any non-root UID works; files the worker writes go to /tmp).
RUN_AS_USER = 10001
HASH_ANNOTATION = "taskfleet.io/spec-hash"
TASKQUEUE_LABEL = "taskfleet.io/taskqueue"
MANAGER = "taskfleet-operator"


def selector_labels(tq: TaskQueue) -> dict[str, str]:
    """The labels that select a TaskQueue's worker pods (immutable once the Deployment exists)."""
    return {"app.kubernetes.io/name": "taskfleet-worker", "app.kubernetes.io/instance": tq.name}


def selector_string(tq: TaskQueue) -> str:
    """``selector_labels`` as a label selector string (the scale subresource's ``status.selector``)."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(tq).items()))


def labels(tq: TaskQueue) -> dict[str, str]:
    return {
        **selector_labels(tq),
        "app.kubernetes.io/component": "worker",
        "app.kubernetes.io/managed-by": MANAGER,
        TASKQUEUE_LABEL: tq.name,
    }


def owner_reference(tq: TaskQueue) -> Json:
    """Makes the TaskQueue the Deployment's controller: deleting the TaskQueue deletes its workers (garbage
    collection), with no finalizer that could hang a deletion while the operator is down."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": tq.name, "uid": tq.uid,
        "controller": True, "blockOwnerDeletion": True,
    }


def worker_command(tq: TaskQueue) -> list[str]:
    """The worker container's command line."""
    w = tq.worker
    command = [
        "taskfleet", "worker", "--app", w.app, "--queues", ",".join(tq.queues),
        "--concurrency", str(w.concurrency), "--drain-timeout", str(w.drain_timeout_s),
        "--health-port", str(HEALTH_PORT), "--log-format", "json",
    ]
    if w.prefetch is not None:
        command += ["--prefetch", str(w.prefetch)]
    if w.max_tasks_per_child is not None:
        command += ["--max-tasks-per-child", str(w.max_tasks_per_child)]
    if w.max_memory_per_child_mb is not None:
        command += ["--max-memory-per-child", str(w.max_memory_per_child_mb)]
    if w.log_level is not None:
        command += ["--log-level", w.log_level]
    return command + list(w.args)


def broker_env(tq: TaskQueue) -> list[Json]:
    """The broker settings as env vars: the URLs read from the Secret by the kubelet, never copied into the
    Deployment; the RabbitMQ queue type as it is (the worker reads it as its app's ``task_default_queue_type``)."""
    broker = tq.broker
    if broker.url_from is not None:
        env: list[Json] = [{"name": "TASKFLEET_BROKER_URL", "valueFrom": broker.url_from.env_source()}]
    else:
        env = [{"name": "TASKFLEET_BROKER_URL", "value": broker.url}]
    if broker.management_url_from is not None:
        env.append({"name": "TASKFLEET_BROKER_MANAGEMENT_URL", "valueFrom": broker.management_url_from.env_source()})
    if broker.queue_type is not None:
        env.append({"name": ENV_TASK_DEFAULT_QUEUE_TYPE, "value": broker.queue_type})
    return env


#: The pod's identity, from the downward API: the worker puts it in its heartbeat record
#: (``taskfleet.fleet.records.pod_from_env``), so ``taskfleet workers`` and a scale-in can tell which pod runs it.
POD_ENV: tuple[tuple[str, str], ...] = (
    ("TASKFLEET_POD_NAME", "metadata.name"),
    ("TASKFLEET_POD_NAMESPACE", "metadata.namespace"),
    ("TASKFLEET_POD_UID", "metadata.uid"),
)


def pod_env() -> list[Json]:
    """``POD_ENV`` as env vars the kubelet fills from the pod's own fields."""
    return [{"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}
            for name, path in POD_ENV]


def worker_deployment(tq: TaskQueue, *, replicas: int) -> Json:
    """The worker Deployment of ``tq``, running ``replicas`` pods, with its spec hash annotation."""
    w = tq.worker
    probe = {"periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 3}
    container: Json = {
        "name": "worker",
        "image": w.image,
        "command": worker_command(tq),
        # The user's env last: a name set twice takes its last value.
        "env": broker_env(tq) + pod_env() + [copy.deepcopy(e) for e in w.env],
        "ports": [{"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"}],
        # /healthz fails when the supervisor is wedged; /readyz while the worker cannot reach its broker.
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "health"}, "initialDelaySeconds": 10, **probe},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "health"}, **probe},
        "startupProbe": {"httpGet": {"path": "/healthz", "port": "health"}, "periodSeconds": 2,
                         "failureThreshold": 60},
        "securityContext": {
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    _put(container, "envFrom", [copy.deepcopy(e) for e in w.env_from])
    _put(container, "resources", copy.deepcopy(w.resources))
    _put(container, "imagePullPolicy", w.image_pull_policy)

    pod_spec: Json = {
        "containers": [container],
        # The worker stops fetching on SIGTERM and finishes what it runs (no Service endpoints, so no preStop).
        "terminationGracePeriodSeconds": w.drain_timeout_s + GRACE_MARGIN_S,
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": RUN_AS_USER, "runAsGroup": RUN_AS_USER, "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumes": [{"name": "tmp", "emptyDir": {}}],
        # Workers talk to the broker, not to the Kubernetes API, unless given an account on purpose.
        "automountServiceAccountToken": w.service_account_name is not None,
    }
    _put(pod_spec, "serviceAccountName", w.service_account_name)
    _put(pod_spec, "nodeSelector", copy.deepcopy(w.node_selector))
    _put(pod_spec, "tolerations", [copy.deepcopy(t) for t in w.tolerations])
    _put(pod_spec, "affinity", copy.deepcopy(w.affinity))
    _put(pod_spec, "imagePullSecrets", [copy.deepcopy(s) for s in w.image_pull_secrets])

    pod_labels = {**(w.pod_labels or {}), **labels(tq)}
    pod_annotations = {
        **(w.pod_annotations or {}),
        "prometheus.io/scrape": "true", "prometheus.io/port": str(HEALTH_PORT), "prometheus.io/path": "/metrics",
    }
    deployment: Json = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": tq.deployment_name, "namespace": tq.namespace, "labels": labels(tq),
            "ownerReferences": [owner_reference(tq)],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector_labels(tq)},
            "revisionHistoryLimit": 3,
            # New pods come up before old ones drain: a rollout never lowers the worker count.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {"metadata": {"labels": pod_labels, "annotations": pod_annotations}, "spec": pod_spec},
        },
    }
    deployment["metadata"]["annotations"] = {HASH_ANNOTATION: spec_hash(deployment)}
    return deployment


def spec_hash(deployment: Json) -> str:
    """A short hash of everything in ``deployment`` the operator owns, except ``spec.replicas`` and the hash itself."""
    owned = {
        "labels": deployment["metadata"].get("labels"),
        "owners": deployment["metadata"].get("ownerReferences"),
        "spec": {k: v for k, v in deployment["spec"].items() if k != "replicas"},
    }
    return hashlib.sha256(orjson.dumps(owned, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def _put(target: Json, key: str, value: Any) -> None:
    """Set ``key`` only when ``value`` says something (Kubernetes omits empty fields; so do we)."""
    if value not in (None, [], {}):
        target[key] = value
