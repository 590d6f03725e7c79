"""02 retries and time limits: automatic retries with exponential backoff, a task that runs out of retries, and a
soft and a hard time limit."""

from __future__ import annotations

import time

from taskfleet import App, SoftTimeLimitExceeded, Task

#: The embedded SQLite broker in this directory (TASKFLEET_BROKER_URL overrides it, as in 01).
LOCAL_DB = "sqlite:///taskfleet.db"

app = App("retries", broker=LOCAL_DB, result_backend=LOCAL_DB)

#: Seconds one thumbnail takes in ``build_thumbnails``.
THUMBNAIL_S = 0.3


@app.task(bind=True, autoretry_for=(ConnectionError,), max_retries=5, retry_backoff=0.2, retry_backoff_max=5.0)
def fetch_rates(self: Task[str], currency: str) -> str:
    """A flaky upstream: the first two attempts raise ``ConnectionError``, which ``autoretry_for`` turns into retries
    after a backoff of 0.2 s, then 0.4 s (``retry_backoff`` base doubled per retry; ``retry_jitter``, on by default,
    picks each wait within [wait/2, wait])."""
    if self.request.retries < 2:
        raise ConnectionError(f"rates service timed out (attempt {self.request.retries + 1})")
    return f"{currency} rates fetched on attempt {self.request.retries + 1}"


@app.task(autoretry_for=(ConnectionError,), max_retries=2, retry_backoff=0.1)
def sync_inventory(store: str) -> str:
    """Always fails: after ``max_retries=2`` retries it is FAILURE with the last error, and its message goes to the
    queue's dead-letter list (``taskfleet dead-letters default``)."""
    raise ConnectionError(f"inventory API of {store} is down")


@app.task(soft_time_limit=1.0, time_limit=5.0)
def build_thumbnails(count: int) -> str:
    """Soft limit: after 1 s ``SoftTimeLimitExceeded`` is raised inside the task, which stops and returns what it
    has. The hard limit (5 s) would kill it if it did not."""
    done = 0
    try:
        for _ in range(count):
            time.sleep(THUMBNAIL_S)  # one thumbnail
            done += 1
    except SoftTimeLimitExceeded:
        return f"stopped by the soft time limit after {done} of {count} thumbnails"
    return f"built {done} thumbnails"


@app.task(time_limit=1.0)
def call_stuck_api() -> str:
    """Hard limit: the worker kills the child that runs this after 1 s; the task is FAILURE with
    ``TimeLimitExceeded`` and a new child takes the killed one's place."""
    time.sleep(3600)  # a call that never returns and ignores everything
    return "unreachable"
