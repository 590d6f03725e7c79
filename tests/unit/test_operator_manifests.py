"""Specification of the worker Deployment the operator applies for a TaskQueue (taskfleet.operator.manifests)."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from taskfleet.fleet.records import PodInfo, pod_from_env
from taskfleet.operator.manifests import (
    GRACE_MARGIN_S,
    HASH_ANNOTATION,
    HEALTH_PORT,
    selector_labels,
    selector_string,
    worker_deployment,
)
from taskfleet.operator.resources import Json, TaskQueue, parse_task_queue
from taskfleet.settings import settings_from_env

UID = "5f0c7a1e-3b1d-4e5a-9c8e-2d6f1a7b9c01"
#: What the broker Secret holds; the Deployment must only ever point at it.
SECRET_URL = "amqp://orders:s3cr3t-pa55@rabbitmq.messaging:5672/orders"


def _body(**spec_overrides: Any) -> Json:
    """A TaskQueue as the API server hands it out: RabbitMQ via Secrets, a worker with the usual pod settings."""
    spec: Json = {
        "queues": ["orders", "orders.priority"],
        "broker": {
            "urlFrom": {"secretKeyRef": {"name": "orders-broker", "key": "url"}},
            "managementUrlFrom": {"secretKeyRef": {"name": "orders-broker", "key": "management-url"}},
        },
        "worker": {
            "image": "registry.example.com/shop/orders-worker:1.4.2",
            "app": "shop.tasks:app",
            "concurrency": 4,
            "drainTimeoutSeconds": 120,
            "env": [
                {"name": "LOG_SAMPLING", "value": "0.1"},
                {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "orders-db", "key": "dsn"}}},
            ],
            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
            "tolerations": [{"key": "workload", "operator": "Equal", "value": "batch", "effect": "NoSchedule"}],
            "nodeSelector": {"kubernetes.io/arch": "amd64"},
            "serviceAccountName": "orders-worker",
        },
        "autoscaling": {"minReplicas": 0, "maxReplicas": 20},
    }
    spec.update(spec_overrides)
    return {
        "apiVersion": "taskfleet.io/v1alpha1",
        "kind": "TaskQueue",
        "metadata": {"name": "orders", "namespace": "shop", "uid": UID, "generation": 3},
        "spec": spec,
    }


def _with_worker(**worker_overrides: Any) -> TaskQueue:
    body = _body()
    body["spec"]["worker"].update(worker_overrides)
    return parse_task_queue(body)


@pytest.fixture
def tq() -> TaskQueue:
    return parse_task_queue(_body())


def _container(deployment: Json) -> Json:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: Json = containers[0]
    return container


def _pod_spec(deployment: Json) -> Json:
    pod_spec: Json = deployment["spec"]["template"]["spec"]
    return pod_spec


def _env(deployment: Json) -> dict[str, Json]:
    return {e["name"]: e for e in _container(deployment)["env"]}


def test_the_deployment_is_named_after_the_taskqueue_in_its_namespace(tq: TaskQueue) -> None:
    deployment = worker_deployment(tq, replicas=3)

    assert deployment["apiVersion"] == "apps/v1"
    assert deployment["kind"] == "Deployment"
    assert deployment["metadata"]["name"] == "orders-worker"
    assert deployment["metadata"]["namespace"] == "shop"


def test_the_taskqueue_controls_its_deployment(tq: TaskQueue) -> None:
    deployment = worker_deployment(tq, replicas=3)

    assert deployment["metadata"]["ownerReferences"] == [{
        "apiVersion": "taskfleet.io/v1alpha1", "kind": "TaskQueue", "name": "orders", "uid": UID,
        "controller": True, "blockOwnerDeletion": True,
    }]


def test_the_selector_matches_the_pod_labels(tq: TaskQueue) -> None:
    deployment = worker_deployment(tq, replicas=3)

    match_labels = deployment["spec"]["selector"]["matchLabels"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert match_labels == selector_labels(tq)
    assert match_labels.items() <= pod_labels.items()


def test_user_pod_labels_cannot_break_the_selector() -> None:
    # Given podLabels that collide with the selector's keys
    tq = _with_worker(podLabels={"app.kubernetes.io/instance": "someone-else", "team": "shop"})

    # When the Deployment is built
    deployment = worker_deployment(tq, replicas=1)

    # Then the selector still matches, and the user's other labels are kept
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector_labels(tq).items() <= pod_labels.items()
    assert pod_labels["team"] == "shop"


@pytest.mark.parametrize("replicas", [0, 3, 7])
def test_the_deployment_runs_the_replicas_asked_for(tq: TaskQueue, replicas: int) -> None:
    assert worker_deployment(tq, replicas=replicas)["spec"]["replicas"] == replicas


def test_the_worker_command_carries_the_worker_settings(tq: TaskQueue) -> None:
    command = _container(worker_deployment(tq, replicas=3))["command"]

    assert command[:2] == ["taskfleet", "worker"]
    for flag, value in [
        ("--app", "shop.tasks:app"),
        ("--queues", "orders,orders.priority"),
        ("--concurrency", "4"),
        ("--drain-timeout", "120"),
        ("--health-port", str(HEALTH_PORT)),
    ]:
        assert command[command.index(flag) + 1] == value, flag


def test_the_broker_url_is_read_from_the_secret(tq: TaskQueue) -> None:
    env = _env(worker_deployment(tq, replicas=3))

    assert env["TASKFLEET_BROKER_URL"] == {
        "name": "TASKFLEET_BROKER_URL", "valueFrom": {"secretKeyRef": {"name": "orders-broker", "key": "url"}},
    }
    assert env["TASKFLEET_BROKER_MANAGEMENT_URL"] == {
        "name": "TASKFLEET_BROKER_MANAGEMENT_URL",
        "valueFrom": {"secretKeyRef": {"name": "orders-broker", "key": "management-url"}},
    }


def test_no_credential_appears_in_the_deployment(tq: TaskQueue) -> None:
    dumped = orjson.dumps(worker_deployment(tq, replicas=3)).decode()

    assert SECRET_URL not in dumped
    assert "s3cr3t" not in dumped
    assert "password" not in dumped.lower()


def test_a_plain_broker_url_becomes_a_plain_env_value() -> None:
    # Given a broker URL without credentials, and no management API
    tq = parse_task_queue(_body(broker={"url": "redis://redis.messaging:6379/0"}))

    # When the Deployment is built
    env = _env(worker_deployment(tq, replicas=1))

    # Then the URL is set as a value
    assert env["TASKFLEET_BROKER_URL"] == {"name": "TASKFLEET_BROKER_URL", "value": "redis://redis.messaging:6379/0"}
    assert "TASKFLEET_BROKER_MANAGEMENT_URL" not in env


def test_a_rabbitmq_queue_type_reaches_the_worker_as_its_task_default_queue_type() -> None:
    # Given a TaskQueue that opts in to quorum queues
    tq = parse_task_queue(_body(broker={"url": "amqp://rabbitmq:5672/", "rabbitmq": {"queueType": "quorum"}}))

    # When the Deployment is built
    env = _env(worker_deployment(tq, replicas=1))

    # Then the worker's entrypoint reads it as its app's setting
    environ = {"TASKFLEET_TASK_DEFAULT_QUEUE_TYPE": env["TASKFLEET_TASK_DEFAULT_QUEUE_TYPE"]["value"]}
    assert settings_from_env(environ) == {"task_default_queue_type": "quorum"}
    assert "TASKFLEET_TASK_DEFAULT_QUEUE_TYPE" not in _env(worker_deployment(parse_task_queue(_body()), replicas=1))


def test_user_env_comes_after_the_broker_and_pod_env(tq: TaskQueue) -> None:
    env = _container(worker_deployment(tq, replicas=3))["env"]

    assert [e["name"] for e in env] == [
        "TASKFLEET_BROKER_URL", "TASKFLEET_BROKER_MANAGEMENT_URL",
        "TASKFLEET_POD_NAME", "TASKFLEET_POD_NAMESPACE", "TASKFLEET_POD_UID",
        "LOG_SAMPLING", "DATABASE_URL",
    ]
    assert env[-1]["valueFrom"] == {"secretKeyRef": {"name": "orders-db", "key": "dsn"}}


@pytest.mark.parametrize(
    ("name", "field_path"),
    [
        pytest.param("TASKFLEET_POD_NAME", "metadata.name", id="the pod's name"),
        pytest.param("TASKFLEET_POD_NAMESPACE", "metadata.namespace", id="its namespace"),
        pytest.param("TASKFLEET_POD_UID", "metadata.uid", id="its uid"),
    ],
)
def test_the_worker_learns_its_pod_through_the_downward_api(tq: TaskQueue, name: str, field_path: str) -> None:
    env = _env(worker_deployment(tq, replicas=3))

    assert env[name] == {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": field_path}}}


def test_the_pod_env_is_what_the_worker_reads() -> None:
    # Given what the kubelet would set from the Deployment's pod env
    tq = parse_task_queue(_body())
    pod_fields = {"metadata.name": "orders-worker-7d9f-x2x", "metadata.namespace": "shop", "metadata.uid": UID}
    environ = {e["name"]: pod_fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
               for e in _container(worker_deployment(tq, replicas=1))["env"]
               if "fieldRef" in e.get("valueFrom", {})}

    # Then the worker's entrypoint finds its pod in it
    assert pod_from_env(environ) == PodInfo(name="orders-worker-7d9f-x2x", namespace="shop", uid=UID)


@pytest.mark.parametrize(
    ("probe", "path"),
    [
        pytest.param("livenessProbe", "/healthz", id="liveness on /healthz"),
        pytest.param("readinessProbe", "/readyz", id="readiness on /readyz"),
        pytest.param("startupProbe", "/healthz", id="startup on /healthz"),
    ],
)
def test_the_probes_hit_the_health_port(tq: TaskQueue, probe: str, path: str) -> None:
    container = _container(worker_deployment(tq, replicas=3))

    assert container[probe]["httpGet"] == {"path": path, "port": "health"}
    assert {"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"} in container["ports"]


def test_the_grace_period_leaves_a_margin_after_the_drain_timeout(tq: TaskQueue) -> None:
    pod_spec = _pod_spec(worker_deployment(tq, replicas=3))

    assert GRACE_MARGIN_S == 15
    assert pod_spec["terminationGracePeriodSeconds"] == 120 + 15


def test_the_worker_runs_unprivileged(tq: TaskQueue) -> None:
    deployment = worker_deployment(tq, replicas=3)
    pod_security = _pod_spec(deployment)["securityContext"]
    container_security = _container(deployment)["securityContext"]

    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] != 0
    assert container_security["allowPrivilegeEscalation"] is False
    assert container_security["readOnlyRootFilesystem"] is True
    assert container_security["capabilities"] == {"drop": ["ALL"]}


def test_a_read_only_root_still_has_a_writable_tmp(tq: TaskQueue) -> None:
    deployment = worker_deployment(tq, replicas=3)

    assert {"name": "tmp", "mountPath": "/tmp"} in _container(deployment)["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {}} in _pod_spec(deployment)["volumes"]


def test_kubernetes_fields_pass_through_to_the_pod(tq: TaskQueue) -> None:
    deployment = worker_deployment(tq, replicas=3)
    pod_spec = _pod_spec(deployment)

    assert _container(deployment)["resources"] == {
        "requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"},
    }
    assert pod_spec["tolerations"] == [
        {"key": "workload", "operator": "Equal", "value": "batch", "effect": "NoSchedule"},
    ]
    assert pod_spec["nodeSelector"] == {"kubernetes.io/arch": "amd64"}


def test_unset_kubernetes_fields_are_left_out() -> None:
    # Given a worker with only the required fields
    body = _body()
    body["spec"]["worker"] = {"image": "registry.example.com/shop/orders-worker:1.4.2", "app": "shop.tasks:app"}

    # When the Deployment is built
    deployment = worker_deployment(parse_task_queue(body), replicas=1)

    # Then no empty Kubernetes fields are written
    container, pod_spec = _container(deployment), _pod_spec(deployment)
    for field in ("envFrom", "resources", "imagePullPolicy"):
        assert field not in container, field
    for field in ("serviceAccountName", "nodeSelector", "tolerations", "affinity", "imagePullSecrets"):
        assert field not in pod_spec, field


def test_a_service_account_gets_its_token_mounted(tq: TaskQueue) -> None:
    pod_spec = _pod_spec(worker_deployment(tq, replicas=3))

    assert pod_spec["serviceAccountName"] == "orders-worker"
    assert pod_spec["automountServiceAccountToken"] is True


def test_without_a_service_account_no_token_is_mounted() -> None:
    body = _body()
    del body["spec"]["worker"]["serviceAccountName"]

    pod_spec = _pod_spec(worker_deployment(parse_task_queue(body), replicas=3))

    assert "serviceAccountName" not in pod_spec
    assert pod_spec["automountServiceAccountToken"] is False


def test_the_spec_hash_ignores_the_replica_count(tq: TaskQueue) -> None:
    # Given the same TaskQueue built at two replica counts
    at_zero = worker_deployment(tq, replicas=0)
    at_seven = worker_deployment(tq, replicas=7)

    # Then the hash is the same: scaling is not a change of the TaskQueue
    assert at_zero["metadata"]["annotations"][HASH_ANNOTATION] == at_seven["metadata"]["annotations"][HASH_ANNOTATION]


def test_the_spec_hash_is_stable_across_builds() -> None:
    first = worker_deployment(parse_task_queue(_body()), replicas=3)
    second = worker_deployment(parse_task_queue(_body()), replicas=3)

    assert first == second


@pytest.mark.parametrize(
    "worker_overrides",
    [
        pytest.param({"image": "registry.example.com/shop/orders-worker:1.5.0"}, id="a new image"),
        pytest.param({"concurrency": 8}, id="a new concurrency"),
        pytest.param({"env": [{"name": "LOG_SAMPLING", "value": "1"}]}, id="a new env value"),
    ],
)
def test_the_spec_hash_changes_when_the_worker_changes(tq: TaskQueue, worker_overrides: Json) -> None:
    before = worker_deployment(tq, replicas=3)["metadata"]["annotations"][HASH_ANNOTATION]

    after = worker_deployment(_with_worker(**worker_overrides), replicas=3)["metadata"]["annotations"][HASH_ANNOTATION]

    assert after != before


def test_the_builder_does_not_mutate_the_taskqueue(tq: TaskQueue) -> None:
    # Given a TaskQueue and a snapshot of its Kubernetes-shaped fields
    worker_before = copy.deepcopy((tq.worker.env, tq.worker.resources, tq.worker.tolerations, tq.worker.node_selector))
    first = worker_deployment(tq, replicas=3)
    expected = copy.deepcopy(first)

    # When someone mutates the built Deployment
    container = _container(first)
    container["env"][-2]["value"] = "changed"
    container["env"][-1]["valueFrom"]["secretKeyRef"]["name"] = "changed"
    container["resources"]["limits"]["memory"] = "1Ti"
    _pod_spec(first)["tolerations"][0]["value"] = "changed"
    _pod_spec(first)["nodeSelector"]["kubernetes.io/arch"] = "changed"

    # Then the TaskQueue and the next build are unchanged
    assert (tq.worker.env, tq.worker.resources, tq.worker.tolerations, tq.worker.node_selector) == worker_before
    assert worker_deployment(tq, replicas=3) == expected


def test_the_selector_string_matches_the_selector_labels(tq: TaskQueue) -> None:
    selector = selector_string(tq)

    assert dict(pair.split("=", 1) for pair in selector.split(",")) == selector_labels(tq)
    assert selector == "app.kubernetes.io/instance=orders,app.kubernetes.io/name=taskfleet-worker"
