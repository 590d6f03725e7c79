"""What ``taskfleet events`` shows, from the events alone: rates over a window, per-task counts and runtimes, the
workers seen (``taskfleet.fleet.event_stats``), and the lines of its view."""

from __future__ import annotations

from typing import Any

import pytest

from taskfleet.cli.events_command import render, summary_line, task_row
from taskfleet.fleet.event_stats import EventStats, percentile
from taskfleet.fleet.events import FleetEvent


def _event(kind: str, ts: float, **fields: Any) -> FleetEvent:
    return FleetEvent(kind, ts, fields)


def _done(ts: float, name: str = "a", runtime: float = 0.1, uuid: str = "u") -> FleetEvent:
    return _event("task-succeeded", ts, uuid=uuid, name=name, runtime=runtime, worker="w")


@pytest.mark.parametrize(("values", "q", "expected"), [
    ([], 50, None),
    ([3.0], 95, 3.0),
    ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
    ([1.0, 2.0, 3.0, 4.0], 75, 3.0),
    ([4.0, 1.0, 3.0, 2.0], 100, 4.0),
    ([float(n) for n in range(1, 101)], 95, 95.0),
    ([float(n) for n in range(1, 21)], 95, 19.0),
    ([5.0, 1.0], 0, 1.0),
])
def test_percentiles_are_nearest_rank_values_that_occurred(values: list[float], q: float,
                                                           expected: float | None) -> None:
    assert percentile(values, q) == expected


def test_a_percentile_outside_0_to_100_is_refused() -> None:
    with pytest.raises(ValueError, match="0-100"):
        percentile([1.0], 101)


def test_the_rate_counts_finished_tasks_in_the_window_ending_now() -> None:
    stats = EventStats(window_s=10.0)
    stats.add_all(_done(ts) for ts in (100.0, 105.0, 108.0, 109.0, 110.0))

    assert stats.rate(now=110.0) == pytest.approx(4 / 10), "the window is (100, 110]"
    assert stats.rate(now=115.5) == pytest.approx(3 / 10), "100 and 105 have left the window"
    assert stats.rate(now=200.0) == 0.0


def test_a_view_younger_than_the_window_divides_by_its_age_not_the_window() -> None:
    stats = EventStats(window_s=10.0)
    stats.add_all([_event("task-received", 100.0, uuid="u", name="a"), _done(101.0), _done(102.0)])

    assert stats.rate(now=102.0) == pytest.approx(2 / 2)


def test_failures_are_failed_and_dead_lettered_tasks_and_retries_are_not_finished() -> None:
    stats = EventStats(window_s=10.0)
    stats.add_all([
        _event("task-failed", 100.0, uuid="1", name="a", runtime=0.5),
        _event("task-dead-lettered", 101.0, uuid="2", name="?", reason="unknown task"),
        _event("task-retried", 102.0, uuid="3", name="a"),
        _done(103.0),
    ])

    assert stats.failures == 2
    assert stats.rate(now=105.0) == pytest.approx(3 / 5)
    assert stats.failure_rate(now=105.0) == pytest.approx(2 / 5)


def test_each_task_has_its_counts_and_the_runtimes_of_its_runs() -> None:
    stats = EventStats()
    stats.add_all([
        _event("task-received", 1.0, uuid="1", name="a"),
        _event("task-started", 1.1, uuid="1", name="a"),
        _done(1.2, runtime=0.2, uuid="1"),
        _done(1.3, runtime=0.4, uuid="2"),
        _event("task-failed", 1.4, uuid="3", name="a", runtime=0.9),
        _done(1.5, name="b", runtime=1.0, uuid="4"),
    ])

    a, b = stats.tasks()
    assert (a.name, b.name) == ("a", "b")
    assert (a.counts["task-received"], a.counts["task-succeeded"], a.counts["task-failed"]) == (1, 2, 1)
    assert a.mean_s == pytest.approx(0.5)
    assert (a.p50_s, a.p95_s, a.max_s) == (0.4, 0.9, 0.9)


def test_an_end_event_without_a_name_counts_under_the_name_its_task_id_had() -> None:
    stats = EventStats()
    stats.add_all([_event("task-received", 1.0, uuid="1", name="billing.charge"),
                   _event("task-revoked", 2.0, uuid="1", name="?", reason="expired")])

    (task,) = stats.tasks()
    assert (task.name, task.counts["task-revoked"]) == ("billing.charge", 1)


def test_runtimes_kept_per_task_are_bounded() -> None:
    stats = EventStats(runtimes_kept=3)
    stats.add_all(_done(float(n), runtime=float(n), uuid=str(n)) for n in range(10))

    (task,) = stats.tasks()
    assert list(task.runtimes) == [7.0, 8.0, 9.0]


def test_workers_are_seen_online_until_their_offline_event() -> None:
    stats = EventStats()
    stats.add_all([
        _event("worker-online", 1.0, worker="h:1", active=0, processed=0),
        _event("worker-heartbeat", 3.0, worker="h:1", active=2, processed=40),
        _event("worker-online", 2.0, worker="h:2"),
        _event("worker-offline", 4.0, worker="h:2"),
    ])

    one, two = stats.workers["h:1"], stats.workers["h:2"]
    assert (one.online, one.active, one.processed, one.last_seen) == (True, 2, 40, 3.0)
    assert (two.online, two.last_seen) == (False, 4.0)


def test_the_view_summarises_rates_totals_and_workers_and_has_a_row_per_task() -> None:
    stats = EventStats(window_s=10.0)
    stats.add_all([_event("worker-online", 100.0, worker="h:1"), _done(101.0, runtime=0.002),
                   _event("task-failed", 102.0, uuid="x", name="a", runtime=0.004)])

    line = summary_line(stats, "billing", now=102.0)
    row = task_row(stats.tasks()[0])

    assert line == ("app billing: 1.0 tasks/s, 0.5 failures/s (last 10 s); 2 finished, 1 failed; "
                    "1 worker(s) online; 3 events")
    assert row == ["a", "0", "0", "0", "1", "1", "0", "0", "0", "3.0ms", "2.0ms", "4.0ms"]
    render(stats, "billing", now=102.0)  # builds without error
