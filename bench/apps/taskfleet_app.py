"""Taskfleet's benchmark tasks. Workers import this module as ``taskfleet_app`` with bench/apps as their extra
import path."""

from __future__ import annotations

from taskfleet import App

QUEUE = "bench"

#: Broker and result backend come from the worker's --broker/--result-backend and the runner's ``configure``.
app = App("bench", default_queue=QUEUE)


@app.task(ignore_result=True)
def noop() -> None:
    return None


@app.task(ignore_result=True)
def payload(blob: str) -> None:
    return None


@app.task
def noop_result() -> None:
    return None


@app.task
def add_one(x: int) -> int:
    """A chain step: its parent's result plus one."""
    return x + 1


@app.task
def count(results: list[object]) -> int:
    """A chord body: how many header results it got."""
    return len(results)
