"""No-op tasks for the benchmarks."""

from __future__ import annotations

from taskfleet import App

app = App("bench", default_queue="bench")


@app.task
def noop() -> None:
    return None


@app.task(ignore_result=True)
def noop_no_result() -> None:
    return None
