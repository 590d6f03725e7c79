"""Example tasks for the worker image (deploy/examples/worker). The broker URL comes from the environment:
the operator sets TASKFLEET_BROKER_URL in worker pods from the TaskQueue's broker Secret."""

from __future__ import annotations

import time

from taskfleet import App

app = App("examples", default_queue="emails")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(max_retries=3, retry_backoff=True)
def send_email(to: str) -> str:
    time.sleep(0.2)  # pretend to talk to an SMTP server
    return f"sent to {to}"
