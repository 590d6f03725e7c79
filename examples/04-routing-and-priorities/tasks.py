"""04 routing and priorities: tasks bound to queues, a worker per queue, and priorities within a queue."""

from __future__ import annotations

import os
import time

from taskfleet import App, Task

#: The embedded SQLite broker in this directory (TASKFLEET_BROKER_URL overrides it, as in 01).
LOCAL_DB = "sqlite:///taskfleet.db"

app = App("routing", broker=LOCAL_DB, result_backend=LOCAL_DB)


@app.task(bind=True, queue="emails")
def send_email(self: Task[dict[str, object]], to: str) -> dict[str, object]:
    """Routed to queue ``emails``. Returns the queue it came from and the pid of its worker (the supervisor: the
    parent of the child that runs the task)."""
    return {"to": to, "queue": self.request.queue, "worker_pid": os.getppid()}


@app.task(bind=True, queue="reports", track_started=True)  # send.py waits for STARTED
def build_report(self: Task[dict[str, object]], name: str, work_s: float = 0.0) -> dict[str, object]:
    """Routed to queue ``reports``; takes ``work_s`` seconds. Returns when it started, so send.py can show the
    order in which reports ran."""
    started = time.time()
    time.sleep(work_s)
    return {"name": name, "queue": self.request.queue, "worker_pid": os.getppid(), "started": started}
