"""Tasks the workflow (canvas) tests run, registered in the test tasks' app (``tests.tasks.app``): a worker started
with ``app="tests.canvas_tasks:app"`` has these and the tasks of tests/tasks.py.

Tasks that tests observe from outside write lines to a file named in their arguments (``tasks.lines`` reads it).
"""

from __future__ import annotations

import os
import time
from typing import Any

from tests.tasks import _note, app

__all__ = ["app"]


@app.task
def mul(x: int, y: int) -> int:
    return x * y


@app.task
def tsum(numbers: list[int]) -> int:
    """Chord bodies: the sum of the header's results."""
    return sum(numbers)


@app.task
def collect(values: list[Any]) -> list[Any]:
    """A chord body that returns what it was given (the header's results, in header order)."""
    return values


@app.task
def echo(value: Any, *rest: Any) -> list[Any]:
    """Its arguments, as a list (tests read what a callback or chain step was given)."""
    return [value, *rest]


@app.task
def boom(*args: Any) -> None:
    raise ValueError(f"boom {list(args)}")


@app.task(ignore_result=True)
def add_quietly(x: int, y: int) -> int:
    """``add`` with ``ignore_result``: nothing is stored for it, yet a chord's join still gets its result."""
    return x + y


@app.task
def note_failure(request: dict[str, Any], exc: dict[str, Any], traceback: str | None, path: str) -> str:
    """An errback: writes ``<failed task name> <exception type> <message>`` to ``path``."""
    line = f"{request['task']} {exc['type']} {exc['message']}"
    _note(path, line)
    return line


@app.task
def note(value: Any, path: str) -> Any:
    """A callback: writes ``value`` to ``path`` and returns it."""
    _note(path, repr(value))
    return value


@app.task
def body_once(results: list[Any], path: str) -> int:
    """A chord body that appends one line per run to ``path`` (tests assert it ran exactly once)."""
    _note(path, f"body {os.getpid()} {sorted(results)}")
    return len(results)


@app.task
def slow_part(index: int, seconds: float, path: str) -> int:
    """A chord header task that writes ``start <index> <pid>``, sleeps, then returns ``index``."""
    _note(path, f"start {index} {os.getpid()}")
    time.sleep(seconds)
    return index
