"""Specification of the worker's Prometheus metrics (taskfleet.worker.metrics)."""

from __future__ import annotations

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from taskfleet.worker.metrics import RESTART_REASONS, WorkerMetrics


def _value(metrics: WorkerMetrics, name: str, **labels: str) -> float | None:
    value: float | None = metrics.registry.get_sample_value(name, labels)
    return value


def test_a_finished_task_is_counted_under_its_task_queue_and_outcome() -> None:
    metrics = WorkerMetrics()

    metrics.task_finished("app.add", "default", "success", 0.01)
    metrics.task_finished("app.add", "default", "success", 0.02)
    metrics.task_finished("app.add", "default", "retry", 0.03)

    labels = {"task": "app.add", "queue": "default"}
    assert _value(metrics, "taskfleet_tasks_total", **labels, outcome="success") == 2
    assert _value(metrics, "taskfleet_tasks_total", **labels, outcome="retry") == 1


def test_a_finished_task_observes_its_runtime_in_seconds() -> None:
    metrics = WorkerMetrics()

    metrics.task_finished("app.add", "default", "failure", 0.25)
    metrics.task_finished("app.add", "default", "success", 1.5)

    labels = {"task": "app.add", "queue": "default"}
    assert _value(metrics, "taskfleet_task_runtime_seconds_count", **labels) == 2
    assert _value(metrics, "taskfleet_task_runtime_seconds_sum", **labels) == pytest.approx(1.75)
    assert _value(metrics, "taskfleet_task_runtime_seconds_bucket", **labels, le="0.25") == 1


def test_runtime_buckets_span_one_millisecond_to_ten_minutes() -> None:
    metrics = WorkerMetrics()
    metrics.task_finished("app.add", "default", "success", 0.0)

    body, _ = metrics.render()
    family = next(
        f for f in text_string_to_metric_families(body.decode()) if f.name == "taskfleet_task_runtime_seconds"
    )
    bounds = [float(s.labels["le"]) for s in family.samples if s.name.endswith("_bucket")]

    assert min(bounds) == 0.001
    assert max(b for b in bounds if b != float("inf")) == 600.0


def test_an_unknown_outcome_is_rejected_rather_than_creating_a_new_series() -> None:
    metrics = WorkerMetrics()

    with pytest.raises(ValueError, match="outcome"):
        metrics.task_finished("app.add", "default", "sucess", 0.1)


@pytest.mark.parametrize("outcome", ["success", "failure", "retry", "revoked", "dead_lettered", "time_limit"])
def test_every_documented_outcome_is_accepted(outcome: str) -> None:
    metrics = WorkerMetrics()

    metrics.task_finished("app.add", "default", outcome, 0.1)

    assert _value(metrics, "taskfleet_tasks_total", task="app.add", queue="default", outcome=outcome) == 1


def test_in_flight_reports_the_last_value_set() -> None:
    metrics = WorkerMetrics()

    metrics.set_in_flight(3)
    metrics.set_in_flight(1)

    assert _value(metrics, "taskfleet_tasks_in_flight") == 1


def test_child_restarts_are_counted_by_reason() -> None:
    metrics = WorkerMetrics()

    metrics.child_restarted("max_memory")
    metrics.child_restarted("max_memory")
    metrics.child_restarted("crashed")

    assert _value(metrics, "taskfleet_child_restarts_total", reason="max_memory") == 2
    assert _value(metrics, "taskfleet_child_restarts_total", reason="crashed") == 1


def test_known_restart_reasons_are_exported_at_zero_before_any_restart() -> None:
    metrics = WorkerMetrics()

    assert all(_value(metrics, "taskfleet_child_restarts_total", reason=r) == 0 for r in RESTART_REASONS)


def test_the_children_gauge_reports_the_last_value_set() -> None:
    metrics = WorkerMetrics()

    metrics.set_children(4)

    assert _value(metrics, "taskfleet_worker_children") == 4


@pytest.mark.parametrize(("ok", "exported"), [(True, 1), (False, 0)])
def test_broker_reachability_is_exported_as_one_or_zero(ok: bool, exported: int) -> None:
    metrics = WorkerMetrics()

    metrics.set_broker_reachable(ok)

    assert _value(metrics, "taskfleet_broker_reachable") == exported


def test_render_returns_the_prometheus_text_format_and_its_content_type() -> None:
    metrics = WorkerMetrics()
    metrics.set_children(2)

    body, content_type = metrics.render()

    assert content_type == prometheus_client.CONTENT_TYPE_LATEST
    assert b"taskfleet_worker_children 2.0" in body


def test_each_instance_has_its_own_registry_apart_from_the_global_one() -> None:
    first, second = WorkerMetrics(), WorkerMetrics()

    first.set_children(5)

    assert _value(second, "taskfleet_worker_children") == 0
    assert prometheus_client.REGISTRY.get_sample_value("taskfleet_worker_children") is None
