"""A TaskQueue's status: live numbers, three conditions with stable transition times, no credential, and no write
when nothing changed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from taskfleet.operator.resources import parse_task_queue
from taskfleet.operator.scaling import Decision, Load
from taskfleet.operator.status import Observation, invalid_status, polled_status, status_changed

NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)
TQ = parse_task_queue({
    "metadata": {"name": "emails", "namespace": "shop", "uid": "u-1", "generation": 3},
    "spec": {"queues": ["emails", "emails-low"],
             "broker": {"urlFrom": {"secretKeyRef": {"name": "broker", "key": "url"}}},
             "worker": {"image": "w:1", "app": "shop.tasks:app"}},
})


BUSY = Load(120, 8)


def _seen(load: Load | None = BUSY, *, error: str | None = None, scaled: bool = True) -> Observation:
    decision = Decision(13, "ScaledUp", "scaled from 2 to 13: ready=120 in-flight=8", 13) if load else Decision(
        2, "NoMetrics", "queue depth unknown: keeping 2 replicas")
    return Observation(broker_type="rabbitmq", load=load, delayed=0, dead=1, broker_error=error,
                       broker_error_reason="Unreachable", deployment_error=None, replicas=decision.replicas,
                       decision=decision, scaled=scaled)


def _conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_a_poll_reports_the_numbers_kubectl_shows_and_why() -> None:
    status = polled_status(TQ, _seen(), previous={}, now=NOW, selector="app=x")

    assert (status["queues"], status["ready"], status["inFlight"], status["replicas"], status["desiredReplicas"]) \
        == ("emails,emails-low", 120, 8, 13, 13)
    assert (status["brokerType"], status["lastScaleTime"], status["observedGeneration"]) == (
        "rabbitmq", "2026-11-21T12:00:00Z", 3)
    conditions = _conditions(status)
    assert {t: (c["status"], c["reason"]) for t, c in conditions.items()} == {
        "Ready": ("True", "Reconciled"), "BrokerReachable": ("True", "Connected"), "Scaling": ("True", "ScaledUp")}


def test_due_delayed_work_is_shown_apart_from_ready_and_delayed_work() -> None:
    status = polled_status(TQ, _seen(Load(0, 0, due=2)), previous={}, now=NOW, selector="app=x")

    assert (status["ready"], status["due"], status["delayed"], status["inFlight"]) == (0, 2, 0, 0)


def test_an_unreachable_broker_clears_the_numbers_and_says_why_without_the_password() -> None:
    error = "BrokerConnectionError: cannot connect to amqp://app:***@rabbitmq:5672/"

    status = polled_status(TQ, _seen(None, error=error, scaled=False), previous={}, now=NOW, selector="app=x")

    assert (status["ready"], status["inFlight"], status["due"]) == (None, None, None), \
        "a merge patch with null removes stale numbers"
    conditions = _conditions(status)
    assert (conditions["BrokerReachable"]["status"], conditions["BrokerReachable"]["reason"]) == (
        "False", "Unreachable")
    assert (conditions["Scaling"]["status"], conditions["Scaling"]["reason"]) == ("False", "NoMetrics")
    assert conditions["Ready"]["reason"] == "BrokerUnreachable"
    assert "app:***@" in conditions["BrokerReachable"]["message"]


def test_a_condition_keeps_its_transition_time_until_its_status_changes() -> None:
    first = polled_status(TQ, _seen(), previous={}, now=NOW, selector="app=x")
    later = NOW + timedelta(minutes=5)

    same = polled_status(TQ, _seen(), previous=first, now=later, selector="app=x")
    flipped = polled_status(TQ, _seen(None, error="down", scaled=False), previous=first, now=later, selector="app=x")

    assert _conditions(same)["BrokerReachable"]["lastTransitionTime"] == "2026-11-21T12:00:00Z"
    assert _conditions(flipped)["BrokerReachable"]["lastTransitionTime"] == "2026-11-21T12:05:00Z"
    assert flipped["lastScaleTime"] == "2026-11-21T12:00:00Z", "no scale this poll: the last one stays"


def test_an_invalid_spec_is_reported_in_ready_and_keeps_the_other_conditions() -> None:
    previous = polled_status(TQ, _seen(), previous={}, now=NOW, selector="app=x")

    status = invalid_status(4, "spec.queues: list at least one queue", previous=previous, now=NOW)

    conditions = _conditions(status)
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == ("False", "InvalidSpec")
    assert set(conditions) == {"Ready", "BrokerReachable", "Scaling"}
    assert status["observedGeneration"] == 4


def test_an_unchanged_status_is_not_written_again_until_the_heartbeat() -> None:
    previous = orjson.loads(orjson.dumps(polled_status(TQ, _seen(), previous={}, now=NOW, selector="app=x")))
    soon, late = NOW + timedelta(seconds=10), NOW + timedelta(seconds=31)

    assert not status_changed(previous, polled_status(TQ, _seen(scaled=False), previous=previous, now=soon,
                                                      selector="app=x"), now=soon, heartbeat_s=30)
    assert status_changed(previous, polled_status(TQ, _seen(Load(5, 0)), previous=previous, now=soon,
                                                  selector="app=x"), now=soon, heartbeat_s=30)
    assert status_changed(previous, polled_status(TQ, _seen(scaled=False), previous=previous, now=late,
                                                  selector="app=x"), now=late, heartbeat_s=30)
    assert status_changed({}, previous, now=NOW, heartbeat_s=30), "a TaskQueue never polled gets its first status"
