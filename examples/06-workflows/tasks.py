"""06 workflows: a chain, a group, a chord, map/starmap/chunks, a callback and an errback, and a task that reports
its progress."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from taskfleet import App, Task

#: The embedded SQLite broker in this directory (TASKFLEET_BROKER_URL overrides it, as in 01).
LOCAL_DB = "sqlite:///taskfleet.db"
#: Where the callback and the errback write a line each time they run (``send.py`` reads it).
EVENTS_FILE = Path("events.log")

app = App("workflows", broker=LOCAL_DB, result_backend=LOCAL_DB)


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def mul(x: int, factor: int) -> int:
    return x * factor


@app.task
def total(numbers: list[int]) -> int:
    """A chord body: gets the header's results, in the header's order."""
    return sum(numbers)


@app.task
def check_stock(sku: str) -> int:
    """Fails for an unknown product: ``send.py`` puts it in a chain to show a failure stopping the chain."""
    stock = {"apple": 12, "pear": 0}
    if sku not in stock:
        raise KeyError(f"unknown product {sku!r}")
    return stock[sku]


def _event(line: str) -> None:
    with EVENTS_FILE.open("a", encoding="utf-8") as f:
        f.write(line + "\n")


@app.task
def log_result(value: Any) -> None:
    """A callback (``link``): gets the result of the task it is linked to, once that succeeded."""
    _event(f"callback got {value!r}")


@app.task
def log_error(request: dict[str, Any], exc: dict[str, Any], traceback: str) -> None:
    """An errback (``link_error``): runs once when the task or workflow it is linked to fails, with the failed
    task's request, its exception (type and message) and its traceback."""
    _event(f"errback: {request['task']} failed with {exc['type'].rpartition('.')[2]}: {exc['message']}")


@app.task(bind=True)
def import_rows(self: Task[int], rows: int) -> int:
    """Reports its progress with ``update_state``: the caller's ``get(on_message=)`` sees each step."""
    for done in range(1, rows + 1):
        time.sleep(0.2)
        self.update_state(state="PROGRESS", meta={"done": done, "total": rows})
    return rows
