"""Specification of ``taskfleet.worker.progress``: what a child shares with its supervisor about the task it runs."""

from __future__ import annotations

from taskfleet.worker.progress import Progress


def test_the_supervisor_reads_which_task_a_child_runs_and_nothing_once_it_finished() -> None:
    progress = Progress()
    progress.start(3)
    assert progress.running_task() is None  # started, not described yet
    progress.describe(3, "task-id-1", "billing.charge", 1700000000.5)
    running = progress.running_task()
    assert running is not None
    assert (running.seq, running.task_id, running.task, running.since) == (3, "task-id-1", "billing.charge",
                                                                           1700000000.5)
    progress.finish(3)
    assert progress.running_task() is None


def test_a_description_left_from_an_earlier_delivery_is_not_taken_for_the_running_one() -> None:
    progress = Progress()
    progress.start(1)
    progress.describe(1, "old", "t.old", 1.0)
    progress.finish(1)
    progress.start(2)
    assert progress.running_task() is None
