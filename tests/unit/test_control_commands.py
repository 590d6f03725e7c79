"""Specification of the worker's control command handlers (taskfleet.worker.control_commands): the arguments each
takes (bad ones are refused with ``ControlError``, whose text the reply carries), the Celery-like replies, and what
each changes in a supervisor (here one that has not forked any child)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from taskfleet import App
from taskfleet.errors import ControlError
from taskfleet.fleet.protocol import CONTROL_COMMANDS
from taskfleet.worker.control_commands import HANDLERS
from taskfleet.worker.metrics import UnservedWorkerMetrics
from taskfleet.worker.settings import WorkerSettings
from taskfleet.worker.supervisor import Supervisor
from tests import tasks


@pytest.fixture
def sup(memory_app: App) -> Iterator[Supervisor]:
    supervisor = Supervisor(memory_app, WorkerSettings(queues=("tests",), concurrency=2), UnservedWorkerMetrics())
    yield supervisor
    supervisor.steering.close()


def call(sup: Supervisor, command: str, **args: Any) -> Any:
    return HANDLERS[command](sup, args)


def test_every_control_command_has_a_handler_and_revoked_is_answered_here_too() -> None:
    assert set(HANDLERS) == {*CONTROL_COMMANDS, "revoked"}


def test_revoke_flags_the_ids_and_says_which_it_terminated(sup: Supervisor) -> None:
    reply = call(sup, "revoke", task_ids=["a", "b"], terminate=False, signal="SIGTERM",
                 expires_at=time.time() + 60)
    assert reply == {"ok": "tasks a, b flagged as revoked", "terminated": []}
    assert call(sup, "revoked") == ["a", "b"]


def test_revoke_without_an_expiry_lasts_the_result_expiry(sup: Supervisor) -> None:
    call(sup, "revoke", task_ids=["a"])
    [(_, until)] = sup.runtime.revoked.items()
    assert until == pytest.approx(time.time() + sup.app.settings.result_expires_s, abs=5)


@pytest.mark.parametrize(("args", "error"), [
    ({}, "task_ids"),
    ({"task_ids": []}, "task_ids"),
    ({"task_ids": [1]}, "task_ids"),
    ({"task_ids": ["a"], "terminate": "yes"}, "terminate"),
    ({"task_ids": ["a"], "signal": "SIGNOPE"}, "not a signal"),
    ({"task_ids": ["a"], "expires_at": "tomorrow"}, "expires_at"),
])
def test_revoke_refuses_bad_arguments(sup: Supervisor, args: dict[str, Any], error: str) -> None:
    with pytest.raises(ControlError, match=error):
        call(sup, "revoke", **args)


def test_rate_limit_sets_and_removes_a_tasks_limit(sup: Supervisor) -> None:
    assert call(sup, "rate_limit", task_name=tasks.add.name, rate_limit="5/s") == {"ok": "rate limit set successfully"}
    assert sup.runtime.limits.rate(tasks.add.name, tasks.add.options) is not None
    assert call(sup, "rate_limit", task_name=tasks.add.name, rate_limit=None) == {
        "ok": "rate limit disabled successfully"}
    assert sup.runtime.limits.rate(tasks.add.name, tasks.add.options) is None


@pytest.mark.parametrize(("args", "error"), [
    ({"rate_limit": "5/s"}, "task_name"),
    ({"task_name": "tests.nope", "rate_limit": "5/s"}, "unknown task"),
    ({"task_name": tasks.add.name, "rate_limit": "lots"}, "not a rate limit"),
    ({"task_name": tasks.add.name, "rate_limit": ["5/s"]}, "rate_limit"),
])
def test_rate_limit_refuses_bad_arguments(sup: Supervisor, args: dict[str, Any], error: str) -> None:
    with pytest.raises(ControlError, match=error):
        call(sup, "rate_limit", **args)


def test_time_limit_overrides_the_tasks_limits(sup: Supervisor) -> None:
    assert call(sup, "time_limit", task_name=tasks.add.name, soft=1, hard=2.5) == {
        "ok": "time limits set successfully"}
    assert sup.runtime.limits.time_limits(tasks.add.name, tasks.add.options) == (1.0, 2.5)


@pytest.mark.parametrize(("soft", "hard", "error"), [
    (3, 2, "smaller"), (0, None, "soft"), (None, "long", "hard"), (True, None, "soft"),
])
def test_time_limit_refuses_bad_limits(sup: Supervisor, soft: Any, hard: Any, error: str) -> None:
    with pytest.raises(ControlError, match=error):
        call(sup, "time_limit", task_name=tasks.add.name, soft=soft, hard=hard)


def test_consumers_are_added_and_cancelled_but_the_last_queue_stays(sup: Supervisor) -> None:
    assert call(sup, "add_consumer", queue="extra") == {"ok": "add consumer extra"}
    assert sup.queues == ("tests", "extra")
    assert call(sup, "add_consumer", queue="extra") == {"ok": "already consuming from 'extra'"}
    assert call(sup, "cancel_consumer", queue="tests") == {"ok": "no longer consuming from tests"}
    assert sup.queues == ("extra",)
    with pytest.raises(ControlError, match="only queue"):
        call(sup, "cancel_consumer", queue="extra")
    with pytest.raises(ControlError, match="not consuming"):
        call(sup, "cancel_consumer", queue="tests")
    with pytest.raises(ControlError, match="queue"):
        call(sup, "add_consumer", queue="")


@pytest.mark.parametrize("n", [0, -1, "2", 1.5, True])
def test_pool_commands_take_a_whole_number_of_children(sup: Supervisor, n: Any) -> None:
    with pytest.raises(ControlError, match="n must be"):
        call(sup, "pool_grow", n=n)
    with pytest.raises(ControlError, match="n must be"):
        call(sup, "pool_shrink", n=n)


def test_the_pool_never_shrinks_below_one_child(sup: Supervisor) -> None:
    assert call(sup, "pool_shrink", n=5) == {"ok": "pool will shrink to 1", "concurrency": 1}
    with pytest.raises(ControlError, match="cannot shrink"):
        call(sup, "pool_shrink", n=1)


def test_shutdown_drains_as_sigterm_does(sup: Supervisor) -> None:
    assert call(sup, "shutdown") == {"ok": "shutting down"}
    assert sup.draining
    with pytest.raises(ControlError, match="shutting down"):
        call(sup, "pool_grow", n=1)


def test_revocations_stored_while_the_worker_runs_reach_it_through_its_loop(
        sup: Supervisor, memory_app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a running supervisor that re-reads the stored revocations quickly
    monkeypatch.setattr("taskfleet.worker.steering.REVOCATIONS_REFRESH_S", 0.05)
    sup.steering.refresh_revocations()
    sup.steering.tick(time.monotonic())
    # When a revocation is stored (no control message reaches it: nothing listens here)
    memory_app.control.revoke("stored-later")
    # Then its poller thread reads it and the main loop applies it
    deadline = time.monotonic() + 5
    while "stored-later" not in sup.runtime.revoked and time.monotonic() < deadline:
        sup._run_soon()
        time.sleep(0.01)
    assert "stored-later" in sup.runtime.revoked
