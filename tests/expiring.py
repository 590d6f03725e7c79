"""A worker app whose results expire after one second (result expiry is the storing worker's setting)."""

from __future__ import annotations

from taskfleet import App

app = App("expiring", default_queue="expiring", result_expires_s=1.0)


@app.task
def add(x: int, y: int) -> int:
    return x + y
