"""The demo's tasks (``make demo``): what a service's ``tasks.py`` looks like.

The app names no broker: ``examples/demo.py`` passes one to its worker (``TASKFLEET_BROKER_URL``) and configures
this app with the same one before sending.
"""

from __future__ import annotations

import time

from taskfleet import App, Task

app = App("demo", default_queue="demo")

#: How often beat sends ``heartbeat``, in seconds (the shortest interval beat supports).
HEARTBEAT_EVERY_S = 1.0
#: How long ``resize_image`` pretends to work, in seconds: long enough for the progress bar to show it.
RESIZE_WORK_S = 0.3
#: ``flaky_charge`` is retried this long after its first attempt fails, in seconds.
CHARGE_RETRY_AFTER_S = 0.5


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def resize_image(name: str, width: int) -> str:
    """Pretends to resize an image; returns the name of the resized copy."""
    time.sleep(RESIZE_WORK_S)
    stem, _, ext = name.rpartition(".")
    return f"{stem}-{width}w.{ext}"


@app.task(bind=True, max_retries=3)
def flaky_charge(self: Task[str], amount: int) -> str:
    """Fails on its first attempt (a flaky payment gateway) and succeeds when retried."""
    if self.request.retries == 0:
        self.retry(countdown=CHARGE_RETRY_AFTER_S, exc=ConnectionError("payment gateway timed out"))
    return f"charged {amount} after {self.request.retries} retry"


@app.task
def send_reminder(to: str) -> dict[str, object]:
    """Sent with a countdown; returns when it ran (Unix seconds) so the demo can check the countdown held."""
    return {"to": to, "ran_at": time.time()}


@app.periodic(every=HEARTBEAT_EVERY_S, catch_up="none")
def heartbeat() -> str:
    """Sent by beat every second (``taskfleet worker --beat``); ``catch_up="none"``: a tick missed while no beat
    ran is not sent late."""
    return "alive"
