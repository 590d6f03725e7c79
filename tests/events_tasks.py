"""A worker app that turns task events on by setting (no ``-E``), with a small event stream: the cap is visible."""

from __future__ import annotations

from taskfleet import App

EVENTS_MAX_LEN = 50

app = App("events", default_queue="events", worker_send_task_events=True, events_max_len=EVENTS_MAX_LEN)


@app.task
def add(x: int, y: int) -> int:
    return x + y
