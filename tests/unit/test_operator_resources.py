"""Specification of how a TaskQueue object is read (taskfleet.operator.resources.parse_task_queue)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from taskfleet.errors import InvalidResource
from taskfleet.operator.resources import BrokerRef, Json, SecretKeyRef, parse_task_queue
from taskfleet.operator.scaling import ScalingPolicy


def _body(**spec_overrides: Any) -> Json:
    """The smallest valid TaskQueue: one queue, a broker URL, an image and an app."""
    spec: Json = {
        "queues": ["emails"],
        "broker": {"url": "redis://redis.messaging:6379/0"},
        "worker": {"image": "registry.example.com/mailer:2.0.0", "app": "mailer.tasks:app"},
    }
    spec.update(spec_overrides)
    return {
        "apiVersion": "taskfleet.io/v1alpha1",
        "kind": "TaskQueue",
        "metadata": {"name": "mailer", "namespace": "comms", "uid": "0d6c1f7a-1111-2222-3333-444455556666",
                     "generation": 2},
        "spec": spec,
    }


def test_the_metadata_and_queues_are_read() -> None:
    tq = parse_task_queue(_body(queues=["emails", "emails.bulk"]))

    assert (tq.name, tq.namespace, tq.uid, tq.generation) == (
        "mailer", "comms", "0d6c1f7a-1111-2222-3333-444455556666", 2)
    assert tq.queues == ("emails", "emails.bulk")
    assert tq.key == ("comms", "mailer")
    assert tq.deployment_name == "mailer-worker"


def test_a_missing_autoscaling_block_gets_the_crd_defaults() -> None:
    # Given a TaskQueue stored before the CRD defaulted spec.autoscaling
    body = _body()
    assert "autoscaling" not in body["spec"]

    # When it is parsed
    tq = parse_task_queue(body)

    # Then it autoscales with the defaults
    assert tq.autoscaling == ScalingPolicy()


def test_an_empty_autoscaling_block_gets_the_crd_defaults() -> None:
    assert parse_task_queue(_body(autoscaling={"scaleUp": {}, "scaleDown": {}})).autoscaling == ScalingPolicy()


def test_the_autoscaling_policy_is_read_in_full() -> None:
    # Given every autoscaling field set
    autoscaling = {
        "enabled": True, "minReplicas": 1, "maxReplicas": 30, "targetPerReplica": 25, "activationThreshold": 5,
        "pollIntervalSeconds": 15,
        "scaleUp": {"maxStep": 4},
        "scaleDown": {"stabilizationSeconds": 300, "maxStep": 2},
    }

    # When it is parsed
    policy = parse_task_queue(_body(autoscaling=autoscaling)).autoscaling

    # Then each field lands where the autoscaler reads it
    assert policy == ScalingPolicy(
        enabled=True, min_replicas=1, max_replicas=30, target_per_replica=25, activation_threshold=5,
        poll_interval_s=15, scale_up_max_step=4, scale_down_stabilization_s=300, scale_down_max_step=2,
    )


def test_autoscaling_can_be_disabled_with_fixed_replicas() -> None:
    tq = parse_task_queue(_body(autoscaling={"enabled": False}, replicas=4))

    assert tq.autoscaling.enabled is False
    assert tq.replicas == 4


@pytest.mark.parametrize(
    ("spec_overrides", "expected_replicas", "expected_paused"),
    [
        pytest.param({}, 1, False, id="replicas default to 1, not paused"),
        pytest.param({"replicas": 0}, 0, False, id="zero fixed replicas are allowed"),
        pytest.param({"paused": True}, 1, True, id="paused"),
        pytest.param({"paused": False}, 1, False, id="explicitly not paused"),
    ],
)
def test_replicas_and_paused(spec_overrides: Json, expected_replicas: int, expected_paused: bool) -> None:
    tq = parse_task_queue(_body(**spec_overrides))

    assert (tq.replicas, tq.paused) == (expected_replicas, expected_paused)


def test_worker_defaults_apply_when_unset() -> None:
    worker = parse_task_queue(_body()).worker

    assert (worker.concurrency, worker.drain_timeout_s) == (2, 30)
    assert (worker.prefetch, worker.service_account_name, worker.resources) == (None, None, None)
    assert worker.env == ()


@pytest.mark.parametrize(
    ("broker", "expected"),
    [
        pytest.param({"url": "amqp://rabbitmq:5672/"}, BrokerRef(url="amqp://rabbitmq:5672/"), id="a plain url"),
        pytest.param(
            {"urlFrom": {"secretKeyRef": {"name": "broker", "key": "url"}},
             "managementUrlFrom": {"secretKeyRef": {"name": "broker", "key": "management"}}},
            BrokerRef(url_from=SecretKeyRef("broker", "url"), management_url_from=SecretKeyRef("broker", "management")),
            id="secret references",
        ),
        pytest.param({"url": "amqp://rabbitmq:5672/", "rabbitmq": {"queueType": "quorum"}},
                     BrokerRef(url="amqp://rabbitmq:5672/", queue_type="quorum"), id="quorum queues"),
        pytest.param({"url": "amqp://rabbitmq:5672/", "rabbitmq": {}}, BrokerRef(url="amqp://rabbitmq:5672/"),
                     id="no queue type: the app's"),
    ],
)
def test_the_broker_is_read(broker: Json, expected: BrokerRef) -> None:
    assert parse_task_queue(_body(broker=broker)).broker == expected


def _set(path: str, value: Any) -> Callable[[Json], None]:
    """Sets ``spec.<path>`` (dotted) in a body."""
    def edit(body: Json) -> None:
        *parents, last = path.split(".")
        target = body["spec"]
        for key in parents:
            target = target.setdefault(key, {})
        target[last] = value
    return edit


def _delete(path: str) -> Callable[[Json], None]:
    """Deletes ``spec.<path>`` (dotted) from a body."""
    def edit(body: Json) -> None:
        *parents, last = path.split(".")
        target = body["spec"]
        for key in parents:
            target = target[key]
        del target[last]
    return edit


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        pytest.param(_set("queues", []), "spec.queues", id="no queues"),
        pytest.param(_delete("queues"), "spec.queues", id="queues missing"),
        pytest.param(_set("queues", ["emails", "bad queue!"]), "spec.queues", id="an invalid queue name"),
        pytest.param(_set("broker", {"url": "redis://redis:6379/0",
                                     "urlFrom": {"secretKeyRef": {"name": "broker", "key": "url"}}}),
                     "spec.broker", id="both url and urlFrom"),
        pytest.param(_set("broker", {}), "spec.broker", id="neither url nor urlFrom"),
        pytest.param(_set("broker", {"urlFrom": {"name": "broker", "key": "url"}}), "spec.broker.urlFrom",
                     id="urlFrom without secretKeyRef"),
        pytest.param(_set("broker", {"urlFrom": {"secretKeyRef": {"name": "broker"}}}),
                     "spec.broker.urlFrom.secretKeyRef.key", id="a secretKeyRef without a key"),
        pytest.param(_delete("broker"), "spec.broker", id="broker missing"),
        pytest.param(_delete("worker.image"), "spec.worker.image", id="missing image"),
        pytest.param(_set("worker.image", ""), "spec.worker.image", id="empty image"),
        pytest.param(_delete("worker.app"), "spec.worker.app", id="missing app"),
        pytest.param(_set("worker.concurrency", 0), "spec.worker.concurrency", id="concurrency 0"),
        pytest.param(_set("worker.drainTimeoutSeconds", 0), "spec.worker.drainTimeoutSeconds",
                     id="drain timeout 0"),
        pytest.param(_set("autoscaling", {"minReplicas": 5, "maxReplicas": 2}), "spec.autoscaling",
                     id="minReplicas above maxReplicas"),
        pytest.param(_set("autoscaling.maxReplicas", True), "spec.autoscaling.maxReplicas",
                     id="a bool where an int belongs"),
        pytest.param(_set("worker.concurrency", "4"), "spec.worker.concurrency", id="a string where an int belongs"),
        pytest.param(_set("worker.prefetch", 2.5), "spec.worker.prefetch", id="a float where an int belongs"),
        pytest.param(_set("autoscaling.scaleUp.maxStep", 0), "spec.autoscaling.scaleUp.maxStep",
                     id="a zero scale-up step"),
        pytest.param(_set("replicas", -1), "spec.replicas", id="negative fixed replicas"),
        pytest.param(_set("queues", ["taskfleet.delay.3"]), "spec.queues", id="a reserved queue name"),
        pytest.param(_set("broker", {"url": "amqp://app:hunter2@rabbitmq:5672/"}), "spec.broker.url",
                     id="a password in a plain broker url"),
        pytest.param(_set("broker", {"url": ""}), "spec.broker.url", id="an empty broker url"),
        pytest.param(_set("broker", {"url": "amqp://rabbitmq/", "rabbitmq": {"queueType": "stream"}}),
                     "spec.broker.rabbitmq.queueType", id="an unknown queue type"),
        pytest.param(_set("paused", "false"), "spec.paused", id="a string where a bool belongs"),
        pytest.param(_set("autoscaling.enabled", 1), "spec.autoscaling.enabled", id="an int where a bool belongs"),
    ],
)
def test_an_unusable_taskqueue_is_rejected_with_the_field_path(edit: Callable[[Json], None], field: str) -> None:
    # Given a TaskQueue with one bad field
    body = _body()
    edit(body)

    # When it is parsed, Then the error names the field
    with pytest.raises(InvalidResource) as raised:
        parse_task_queue(body)
    assert str(raised.value).startswith(f"{field}:"), str(raised.value)


@pytest.mark.parametrize("missing", ["name", "namespace", "uid"])
def test_metadata_without_its_identity_is_rejected(missing: str) -> None:
    body = _body()
    del body["metadata"][missing]

    with pytest.raises(InvalidResource, match=f"metadata.{missing}"):
        parse_task_queue(body)


def test_the_parsed_env_is_a_copy_of_the_body() -> None:
    # Given a TaskQueue with an env var
    body = _body()
    body["spec"]["worker"]["env"] = [{"name": "LOG_SAMPLING", "value": "0.1"}]
    tq = parse_task_queue(body)

    # When the body is changed afterwards
    body["spec"]["worker"]["env"][0]["value"] = "1"

    # Then the parsed TaskQueue keeps what it read
    assert tq.worker.env == ({"name": "LOG_SAMPLING", "value": "0.1"},)
