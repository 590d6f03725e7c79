"""Specification of the inspect commands' answers (taskfleet.worker.inspect_commands), from a supervisor's state:
its children's progress and what they reported holding."""

from __future__ import annotations

import os
import socket

import pytest

from taskfleet import App
from taskfleet.brokers.base import Delivery
from taskfleet.canvas.builtins import NAMES as BUILTINS
from taskfleet.fleet.records import PodInfo, worker_id
from taskfleet.worker import inspect_commands
from taskfleet.worker.supervisor import Supervisor
from tests.support.fleet import add_child, fake_supervisor, finish_task, run_task

SINCE = 1_700_000_000.25


@pytest.fixture
def supervisor(memory_app: App) -> Supervisor:
    """Two children: slot 0 finished delivery 1, runs 2 (a redelivery of a retry), holds 3 and 4 unstarted; slot 1
    holds nothing and runs nothing."""
    supervisor = fake_supervisor(memory_app, concurrency=2, queues=("tests", "urgent"), prefetch=4)
    busy = add_child(supervisor, 0, pid=201, held=[
        Delivery("tests", "done-1", b"", 1), Delivery("urgent", "task-2:1", b"", 2),
        Delivery("tests", "task-3", b"", 1), Delivery("tests", "task-4:12", b"", 1),
    ])
    add_child(supervisor, 1, pid=202)
    run_task(busy, 1, "done-1", "tests.tasks.add", SINCE - 1)
    finish_task(busy, 1)
    run_task(busy, 2, "task-2", "tests.tasks.slow", SINCE)
    return supervisor


def test_ping_answers_pong(supervisor: Supervisor) -> None:
    assert inspect_commands.ping(supervisor, {}) == {"ok": "pong"}


def test_active_lists_the_running_task_of_each_busy_child_in_celerys_keys(supervisor: Supervisor) -> None:
    assert inspect_commands.active(supervisor, {}) == [{
        "id": "task-2", "name": "tests.tasks.slow", "type": "tests.tasks.slow", "args": None, "kwargs": None,
        "hostname": worker_id(), "time_start": SINCE, "worker_pid": 201, "message_id": "task-2:1",
        "delivery_info": {"routing_key": "urgent", "redelivered": True}, "delivery_count": 2,
    }]


def test_active_is_empty_when_every_child_is_idle(memory_app: App) -> None:
    supervisor = fake_supervisor(memory_app)
    add_child(supervisor, 0, pid=1)

    assert inspect_commands.active(supervisor, {}) == []


def test_reserved_lists_held_messages_not_yet_started(supervisor: Supervisor) -> None:
    reserved = inspect_commands.reserved(supervisor, {})

    assert [(r["id"], r["message_id"], r["worker_pid"]) for r in reserved] == [
        ("task-3", "task-3", 201), ("task-4", "task-4:12", 201)]
    assert reserved[0]["delivery_info"] == {"routing_key": "tests", "redelivered": False}
    assert reserved[0]["delivery_count"] == 1


@pytest.mark.parametrize(
    ("message_id", "task_id"),
    [("abc", "abc"), ("abc:3", "abc"), ("a:b", "a:b"), ("a:b:10", "a:b"), ("abc:", "abc:")],
)
def test_a_message_id_names_its_task_id_without_the_retry_suffix(message_id: str, task_id: str) -> None:
    assert inspect_commands.task_id_of(message_id) == task_id


def test_scheduled_is_empty_the_broker_keeps_delayed_messages(supervisor: Supervisor) -> None:
    assert inspect_commands.scheduled(supervisor, {}) == []


def test_registered_lists_the_apps_task_names_sorted_without_builtins(supervisor: Supervisor) -> None:
    names = inspect_commands.registered(supervisor, {})

    assert names == sorted(names)
    assert "tests.add" in names
    assert not set(BUILTINS) & set(names)


def test_registered_with_builtins_lists_them_too(supervisor: Supervisor) -> None:
    assert set(BUILTINS) <= set(inspect_commands.registered(supervisor, {"builtins": True}))


def test_stats_describe_the_pool_counts_and_queues(supervisor: Supervisor) -> None:
    supervisor.tally.finished("tests.tasks.add", "success")
    supervisor.tally.finished("tests.tasks.add", "failure")
    supervisor.tally.finished("tests.tasks.slow", "success")

    stats = inspect_commands.stats(supervisor, {})

    assert stats["pid"] == os.getpid()
    assert stats["hostname"] == socket.gethostname()
    assert stats["uptime"] >= 0
    assert stats["pool"]["max-concurrency"] == 2
    assert stats["pool"]["processes"] == [201, 202]
    assert stats["total"] == {"tests.tasks.add": 2, "tests.tasks.slow": 1}
    assert (stats["processed"], stats["failed"]) == (3, 1)
    assert stats["queues"] == ["tests", "urgent"]
    assert stats["prefetch_count"] == 8
    assert stats["broker"] == {"transport": "memory", "url": "memory://"}
    assert (stats["pod"], stats["draining"]) == (None, False)


def test_stats_never_show_the_brokers_password(memory_app: App) -> None:
    memory_app.configure(broker="redis://:s3cr3t@redis.example:6379/0")
    supervisor = fake_supervisor(memory_app, pod=PodInfo(name="p", namespace="n", uid="u"))

    stats = inspect_commands.stats(supervisor, {})

    assert "s3cr3t" not in repr(stats)
    assert stats["broker"] == {"transport": "redis", "url": "redis://:***@redis.example:6379/0"}
    assert stats["pod"] == {"name": "p", "namespace": "n", "uid": "u"}


def test_revoked_is_empty_until_revocations_are_kept(supervisor: Supervisor) -> None:
    assert inspect_commands.revoked(supervisor, {}) == []
