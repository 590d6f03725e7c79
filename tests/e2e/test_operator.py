"""The operator against a real kube-apiserver, real brokers and real workers: TaskQueues are validated by the API
server, get an owned worker Deployment, and are scaled on ready + due + in-flight messages, to and from zero.

There is no kubelet: Deployments are objects only, so "replicas" means what the Deployment asks for, and the
workers that drain the queues are local processes started by the tests.
"""

from __future__ import annotations

import json
import time

import pytest

from taskfleet import App
from tests import tasks
from tests.conftest import MakeBroker, StartWorker
from tests.support.brokers import BrokerKind, Capability
from tests.support.k8s import ControlPlane
from tests.support.operator import (
    OperatorProcess,
    apply,
    condition,
    create_broker_secret,
    events,
    get,
    replicas,
    task_queue,
    wait_replicas,
)
from tests.support.servers import RedisServer, serve
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

#: The CRD's default pollIntervalSeconds: the burst test measures the reaction time users get out of the box.
DEFAULT_POLL_S = 5
#: Seconds a kubectl round trip may add to a measured reaction time.
OBSERVE_SLACK_S = 0.5


def status_of(kube: ControlPlane, namespace: str, name: str) -> dict[str, object]:
    return dict((get(kube, namespace, "taskqueue", name) or {}).get("status") or {})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
                     "autoscaling.minReplicas must be at most autoscaling.maxReplicas", id="min-above-max"),
        pytest.param({"autoscalling": {"maxReplicas": 2}}, 'unknown field "spec.autoscalling"', id="typo"),
        pytest.param({"queues": []}, "spec.queues: Invalid value: 0: spec.queues in body should have at least 1 items",
                     id="no-queues"),
        pytest.param({"queues": ["taskfleet.delay.3"]}, "queue names starting with 'taskfleet.' are reserved",
                     id="reserved-queue"),
        pytest.param({"broker": {"url": "amqp://app:hunter2@rabbitmq:5672/"}},
                     "broker.url must not carry a password", id="password-in-url"),
        pytest.param({"broker": {"url": "redis://redis:6379/0",
                                 "urlFrom": {"secretKeyRef": {"name": "b", "key": "url"}}}},
                     "set exactly one of broker.url or broker.urlFrom", id="two-brokers"),
        pytest.param({"broker": {"url": "amqp://rabbitmq:5672/", "rabbitmq": {"queueType": "stream"}}},
                     'Unsupported value: "stream": supported values: "classic", "quorum"', id="queue-type"),
        pytest.param({"broker": {"url": "redis://redis:6379/0", "rabbitmq": {"queueType": "quorum"}}},
                     "broker.rabbitmq applies to a RabbitMQ broker only", id="rabbitmq-on-redis"),
        pytest.param({"worker": {"image": "w:1"}}, 'spec.worker.app: Required value', id="no-app"),
    ],
)
def test_an_invalid_task_queue_is_rejected_by_the_api_server_with_a_readable_message(
    crd: ControlPlane, namespace: str, change: dict[str, object], message: str
) -> None:
    manifest = task_queue("orders", queues=["orders"])
    manifest["spec"].update(change)

    rejected = apply(crd, namespace, manifest, check=False)

    assert rejected.returncode != 0
    assert message in rejected.stderr
    assert "hunter2" not in rejected.stderr, "the API server's message must not echo a password"
    assert get(crd, namespace, "taskqueue", "orders") is None


def test_a_task_queue_gets_an_owned_worker_deployment_and_worker_changes_roll_it(
    crd: ControlPlane, namespace: str, operator: OperatorProcess, redis_url: str
) -> None:
    create_broker_secret(crd, namespace, redis_url)
    apply(crd, namespace, task_queue(
        "emails", queues=["emails", "emails-low"], worker={"concurrency": 4, "env": [{"name": "MODE", "value": "x"}]},
        autoscaling={"minReplicas": 1},
    ))

    wait_for(lambda: get(crd, namespace, "deployment", "emails-worker"), 10, interval=0.1,
             message=f"no worker Deployment:\n{operator.log_text()[-2000:]}")
    tq = get(crd, namespace, "taskqueue", "emails")
    deployment = get(crd, namespace, "deployment", "emails-worker")
    assert tq is not None
    assert deployment is not None
    assert deployment["metadata"]["ownerReferences"] == [{
        "apiVersion": "taskfleet.io/v1alpha1", "kind": "TaskQueue", "name": "emails", "uid": tq["metadata"]["uid"],
        "controller": True, "blockOwnerDeletion": True,
    }]
    assert deployment["spec"]["replicas"] == 1
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/taskfleet/worker:test"
    assert container["command"][:8] == ["taskfleet", "worker", "--app", "tests.tasks:app", "--queues",
                                        "emails,emails-low", "--concurrency", "4"]
    assert container["env"] == [
        {"name": "TASKFLEET_BROKER_URL", "valueFrom": {"secretKeyRef": {"name": "broker", "key": "url"}}},
        *({"name": f"TASKFLEET_POD_{key}",
           "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": f"metadata.{field}"}}}
          for key, field in (("NAME", "name"), ("NAMESPACE", "namespace"), ("UID", "uid"))),
        {"name": "MODE", "value": "x"},
    ]
    assert redis_url not in json.dumps(deployment), "the broker URL stays in its Secret"
    wait_for(lambda: condition(get(crd, namespace, "taskqueue", "emails"), "Ready").get("status") == "True", 10,
             interval=0.2, message="the TaskQueue never became Ready")

    apply(crd, namespace, task_queue(
        "emails", queues=["emails", "emails-low"], image="ghcr.io/taskfleet/worker:v2",
        worker={"concurrency": 4, "env": [{"name": "MODE", "value": "x"}]}, autoscaling={"minReplicas": 1},
    ))

    def rolled() -> bool:
        d = get(crd, namespace, "deployment", "emails-worker") or {}
        return bool(d["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/taskfleet/worker:v2")

    wait_for(rolled, 10, interval=0.1, message="the Deployment's pod template kept the old image")
    rolled_deployment = get(crd, namespace, "deployment", "emails-worker")
    assert rolled_deployment is not None
    assert rolled_deployment["metadata"]["generation"] > deployment["metadata"]["generation"]
    assert rolled_deployment["spec"]["replicas"] == 1, "a rollout keeps the autoscaler's replica count"
    assert "worker Deployment emails-worker updated" in [e["message"] for e in events(crd, namespace, "Reconciled")]

    # No finalizer: deleting a TaskQueue never waits for the operator
    assert not (get(crd, namespace, "taskqueue", "emails") or {})["metadata"].get("finalizers")
    crd.kubectl("delete", "taskqueue", "emails", "-n", namespace, "--wait=true", "--timeout=10s")
    assert get(crd, namespace, "taskqueue", "emails") is None


def test_kubectl_scale_pins_the_workers_while_autoscaling_is_off_and_paused_stops_them(
    crd: ControlPlane, namespace: str, operator: OperatorProcess, redis_url: str
) -> None:
    create_broker_secret(crd, namespace, redis_url)
    manifest = task_queue("batch", queues=["batch"], autoscaling={"enabled": False, "pollIntervalSeconds": 1})
    apply(crd, namespace, manifest)
    wait_replicas(crd, namespace, "batch-worker", 1, timeout=15)  # spec.replicas defaults to 1

    crd.kubectl("scale", "taskqueue", "batch", "-n", namespace, "--replicas=3")

    wait_replicas(crd, namespace, "batch-worker", 3, timeout=10)
    wait_for(lambda: status_of(crd, namespace, "batch").get("replicas") == 3, 10, interval=0.2,
             message=f"status.replicas (the scale subresource) never showed 3: {status_of(crd, namespace, 'batch')}")
    scale = json.loads(crd.kubectl("get", "--raw", f"/apis/taskfleet.io/v1alpha1/namespaces/{namespace}"
                                   "/taskqueues/batch/scale").stdout)
    assert scale["spec"]["replicas"] == 3
    assert scale["status"]["selector"] == "app.kubernetes.io/instance=batch,app.kubernetes.io/name=taskfleet-worker"

    crd.kubectl("patch", "taskqueue", "batch", "-n", namespace, "--type=merge", "-p", '{"spec": {"paused": true}}')

    wait_replicas(crd, namespace, "batch-worker", 0, timeout=10)
    assert condition(get(crd, namespace, "taskqueue", "batch"), "Scaling")["reason"] == "Paused"


def test_a_burst_on_an_idle_queue_scales_workers_from_zero_then_back_after_the_queue_drains(
    crd: ControlPlane, namespace: str, operator: OperatorProcess, app: App, broker_url: str,
    management_url: str | None, start_worker: StartWorker,
) -> None:
    # Given an idle TaskQueue scaled to zero, polled every 5 s (the default), one replica per 50 waiting or running
    # tasks
    create_broker_secret(crd, namespace, broker_url, management_url)
    apply(crd, namespace, task_queue(
        "burst", queues=["tests"], management=management_url is not None,
        autoscaling={"minReplicas": 0, "maxReplicas": 8, "targetPerReplica": 50,
                     "scaleDown": {"stabilizationSeconds": 4}},
    ))
    wait_for(lambda: status_of(crd, namespace, "burst").get("lastPollTime"), 15, interval=0.1,
             message=f"the autoscaler never polled:\n{operator.log_text()[-3000:]}")
    assert replicas(crd, namespace, "burst-worker") == 0

    # When 200 tasks arrive
    for i in range(200):
        tasks.add.delay(i, 1)
    enqueued = time.monotonic()

    # Then the workers are scaled to 200/50 = 4 within one poll interval (+1 s); on Redis the wake notice of the
    # first enqueue makes it about a second (tests/e2e/test_operator_wake.py), elsewhere the poll decides
    scaled = wait_replicas(crd, namespace, "burst-worker", 4, timeout=DEFAULT_POLL_S + 10)
    reaction_s = scaled - enqueued
    print(f"reaction time (last enqueue -> Deployment scaled to 4): {reaction_s:.2f} s with a {DEFAULT_POLL_S} s poll")
    assert reaction_s <= DEFAULT_POLL_S + 1 + OBSERVE_SLACK_S
    scaled_events = [e["message"] for e in events(crd, namespace, "Scaled")]
    assert any(m.startswith("scaled from 0 to ") and "ready=" in m for m in scaled_events), scaled_events
    assert f'taskfleet_operator_scale_events_total{{direction="up",namespace="{namespace}",taskqueue="burst"}}' \
        in operator.metrics()

    # When local workers drain the queue, the Deployment returns to minReplicas once the window has passed
    start_worker(concurrency=4)
    start_worker(concurrency=4)
    wait_replicas(crd, namespace, "burst-worker", 0, timeout=60)
    status = status_of(crd, namespace, "burst")
    assert (status["ready"], status["replicas"], status["desiredReplicas"]) == (0, 0, 0)
    assert status["inFlight"] == 0
    assert condition(get(crd, namespace, "taskqueue", "burst"), "Scaling")["reason"] in ("ScaledDown", "Stable")


#: Countdown of the delayed task in the zero-replica test, and that TaskQueue's poll interval.
COUNTDOWN_S = 2.0
DELAYED_POLL_S = 1


def test_a_countdown_sent_to_a_task_queue_at_zero_replicas_wakes_its_workers_once_it_is_due(
    crd: ControlPlane, namespace: str, operator: OperatorProcess, app: App, broker_url: str,
    management_url: str | None, broker_kind: BrokerKind,
) -> None:
    # Given an idle TaskQueue at zero replicas, polled every second
    create_broker_secret(crd, namespace, broker_url, management_url)
    apply(crd, namespace, task_queue(
        "later", queues=["tests"], management=management_url is not None,
        autoscaling={"minReplicas": 0, "pollIntervalSeconds": DELAYED_POLL_S},
    ))
    wait_for(lambda: status_of(crd, namespace, "later").get("lastPollTime"), 15, interval=0.1,
             message=f"the autoscaler never polled:\n{operator.log_text()[-3000:]}")
    assert replicas(crd, namespace, "later-worker") == 0

    # When a task is sent with a countdown (nothing is ready: on Redis only a worker's fetch would move it to ready)
    tasks.add.apply_async((1, 2), countdown=COUNTDOWN_S)
    sent = time.monotonic()

    # Then the Deployment is scaled up once the task is due, within a few polls
    budget_s = COUNTDOWN_S + 3 * DELAYED_POLL_S + broker_kind.count_lag_s
    scaled = wait_replicas(crd, namespace, "later-worker", 1, timeout=budget_s + 5)
    woke_s = scaled - sent
    print(f"{broker_kind.name}: a {COUNTDOWN_S:g} s countdown woke the workers after {woke_s:.2f} s")
    assert woke_s <= budget_s + OBSERVE_SLACK_S
    scaled_events = [e["message"] for e in events(crd, namespace, "Scaled")]
    assert any(m.startswith("scaled from 0 to 1") for m in scaled_events), scaled_events

    # And the status shows it as work to do: due on Redis (it waits for a worker's fetch), ready where a due message
    # becomes ready by itself (SQLite, RabbitMQ's delay ladder)
    counted_as = "ready" if broker_kind.supports(Capability.READY_WHEN_DUE) else "due"
    wait_for(lambda: status_of(crd, namespace, "later").get(counted_as) == 1, 10, interval=0.2,
             message=f"status never counted the due task as {counted_as}: {status_of(crd, namespace, 'later')}")
    status = status_of(crd, namespace, "later")
    assert status.get("due") == (1 if counted_as == "due" else 0)
    if counted_as == "due":
        assert any(m == "scaled from 0 to 1: ready=0 in-flight=0 due=1" for m in scaled_events), scaled_events


@pytest.mark.parametrize("broker_kind", ["redis"], indirect=True)
def test_kubectl_get_taskqueues_shows_live_numbers(
    crd: ControlPlane, namespace: str, operator: OperatorProcess, app: App, broker_url: str
) -> None:
    create_broker_secret(crd, namespace, broker_url)
    apply(crd, namespace, task_queue("reports", queues=["tests", "reports"],
                                     autoscaling={"pollIntervalSeconds": 1, "targetPerReplica": 20}))
    for i in range(30):
        tasks.add.delay(i, 1)

    # A poll may land mid-enqueue: wait for one that saw all 30
    wait_for(lambda: (status_of(crd, namespace, "reports").get("ready"),
                      status_of(crd, namespace, "reports").get("desiredReplicas")) == (30, 2), 15, interval=0.2,
             message=f"status never showed the backlog: {status_of(crd, namespace, 'reports')}")
    table = crd.kubectl("get", "taskqueues", "-n", namespace).stdout.splitlines()
    wide = crd.kubectl("get", "tq", "-n", namespace, "-o", "wide").stdout.splitlines()

    assert table[0].split() == ["NAME", "QUEUES", "READY", "IN-FLIGHT", "WORKERS", "REPLICAS", "DESIRED", "AGE"]
    assert table[1].split()[:7] == ["reports", "tests,reports", "30", "0", "0/2", "2", "2"], "no kubelet: 0 ready"
    assert wide[0].split()[7:10] == ["BROKER", "REASON", "WORKERS-REASON"]
    broker, reason = wide[1].split()[7:9]
    assert broker == "redis"
    assert reason in ("ScaledUp", "Stable"), "the last decision: the scale-up, or a poll after it"


def test_a_stopped_broker_marks_the_task_queue_unreachable_and_leaves_replicas_alone(
    crd: ControlPlane, namespace: str, operator: OperatorProcess
) -> None:
    server_iter = serve(RedisServer)
    server = next(server_iter)
    try:
        create_broker_secret(crd, namespace, f"{server.url}/0")
        apply(crd, namespace, task_queue("payments", queues=["payments"],
                                         autoscaling={"minReplicas": 2, "pollIntervalSeconds": 1}))
        reachable = lambda: condition(get(crd, namespace, "taskqueue", "payments"), "BrokerReachable")  # noqa: E731
        wait_for(lambda: reachable().get("status") == "True", 15, interval=0.2, message="never reachable")
        assert replicas(crd, namespace, "payments-worker") == 2

        server.stop()
        wait_for(lambda: reachable().get("status") == "False", 15, interval=0.2,
                 message=f"BrokerReachable stayed {reachable()}")
        time.sleep(3)  # three more polls without metrics

        assert reachable()["reason"] == "Unreachable"
        assert replicas(crd, namespace, "payments-worker") == 2, "no scaling decision from missing data"
        scaling = condition(get(crd, namespace, "taskqueue", "payments"), "Scaling")
        assert (scaling["status"], scaling["reason"]) == ("False", "NoMetrics")
        assert [e["type"] for e in events(crd, namespace, "BrokerUnreachable")] == ["Warning"]

        server.start()
        wait_for(lambda: reachable().get("status") == "True", 15, interval=0.2, message="never reachable again")
    finally:
        for _ in server_iter:
            pass


@pytest.mark.parametrize("broker_kind", ["rabbitmq"], indirect=True)
def test_rabbitmq_in_flight_work_keeps_replicas_up_while_nothing_is_ready(
    crd: ControlPlane, namespace: str, operator: OperatorProcess, broker_url: str, management_url: str,
    make_broker: MakeBroker,
) -> None:
    # Given 10 messages delivered to a consumer and not acked (tasks running), with nothing left ready
    create_broker_secret(crd, namespace, broker_url, management_url)
    apply(crd, namespace, task_queue(
        "video", queues=["video"], management=True,
        autoscaling={"targetPerReplica": 5, "pollIntervalSeconds": 1, "scaleDown": {"stabilizationSeconds": 2}},
    ))
    producer, consumer = make_broker(), make_broker()
    for i in range(10):
        producer.enqueue("video", f"m{i}", b"x")
    held = []
    deadline = time.monotonic() + 10
    while len(held) < 10 and time.monotonic() < deadline:
        held += consumer.fetch(["video"], max_messages=10 - len(held), timeout_s=1)
    assert len(held) == 10

    # Then the autoscaler counts them and keeps 10/5 = 2 replicas, well past the stabilization window
    wait_for(lambda: (status_of(crd, namespace, "video").get("ready"),
                      status_of(crd, namespace, "video").get("inFlight")) == (0, 10), 15, interval=0.2,
             message=f"status never showed 10 in flight: {status_of(crd, namespace, 'video')}")
    time.sleep(4)
    assert replicas(crd, namespace, "video-worker") == 2

    # When the work is acked, the queue goes back to zero after the window
    consumer.ack(held)
    wait_replicas(crd, namespace, "video-worker", 0, timeout=20)


def test_a_task_queue_being_deleted_in_the_foreground_does_not_get_its_workers_back(
    crd: ControlPlane, namespace: str, operator: OperatorProcess, redis_url: str
) -> None:
    # Given a TaskQueue deleted with --cascade=foreground: it stays, marked for deletion, until its Deployment is gone
    create_broker_secret(crd, namespace, redis_url)
    apply(crd, namespace, task_queue("cleanup", queues=["cleanup"],
                                     autoscaling={"minReplicas": 1, "pollIntervalSeconds": 1}))
    wait_replicas(crd, namespace, "cleanup-worker", 1, timeout=15)
    crd.kubectl("delete", "taskqueue", "cleanup", "-n", namespace, "--cascade=foreground", "--wait=false")

    # When the garbage collector (played here by the test: no controller-manager runs) deletes the Deployment
    crd.kubectl("delete", "deployment", "cleanup-worker", "-n", namespace)
    time.sleep(3)  # three polls

    # Then the operator does not recreate it
    assert (get(crd, namespace, "taskqueue", "cleanup") or {}).get("metadata", {}).get("deletionTimestamp")
    assert get(crd, namespace, "deployment", "cleanup-worker") is None
