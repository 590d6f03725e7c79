"""The demo's tasks: what a service's tasks.py looks like."""

from __future__ import annotations

from taskfleet import App, Task

app = App("demo", default_queue="demo")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(bind=True, max_retries=3)
def flaky_charge(self: Task[str], amount: int) -> str:
    """Fails on its first attempt (a flaky payment gateway), succeeds on the retry."""
    if self.request.retries == 0:
        self.retry(countdown=0.5, exc=ConnectionError("gateway timeout"))
    return f"charged {amount} after {self.request.retries} retry"


@app.task
def reminder(to: str) -> str:
    return f"reminded {to}"
