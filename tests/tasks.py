"""Tasks the worker tests run. An importable module, so forked children and worker subprocesses find them.

The app has no broker here: workers get ``--broker``/``--result-backend`` flags and tests call ``app.configure``.
Tasks that tests observe from outside write lines to a file named in their arguments.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from taskfleet import App, SoftTimeLimitExceeded, Task

app = App("tests", default_queue="tests", visibility_timeout_s=2.0)


class InsufficientFunds(Exception):
    """A user-defined exception the caller should get back as its own type."""


def _note(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def lines(path: str | Path) -> list[str]:
    """The lines a task wrote to ``path`` (empty when none yet)."""
    p = Path(path)
    return p.read_text(encoding="utf-8").splitlines() if p.exists() else []


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def pid() -> int:
    return os.getpid()


@app.task
def leave_orphan() -> None:
    """Start a grandchild that outlives the shell that started it: the kernel hands it to PID 1 (of the pid
    namespace), which must reap it when it exits."""
    subprocess.run(["sh", "-c", "sleep 0.3 &"], check=True)


@app.task
def record(path: str, label: str) -> str:
    """Append ``label`` to ``path``: tests read the order and count of executions."""
    _note(path, label)
    return label


@app.task
def slow_record(path: str, seconds: float) -> str:
    """Write ``start <pid>``, sleep, write ``done <pid>``."""
    _note(path, f"start {os.getpid()}")
    time.sleep(seconds)
    _note(path, f"done {os.getpid()}")
    return "done"


@app.task
def fail(message: str) -> None:
    raise ValueError(message)


@app.task
def overdraw(amount: int) -> None:
    raise InsufficientFunds(f"cannot withdraw {amount}")


@app.task(bind=True, max_retries=5)
def flaky(self: Task[str], path: str, failures: int) -> str:
    """Fail ``failures`` times (asking for a quick retry), then succeed."""
    _note(path, f"attempt {self.request.retries}")
    if self.request.retries < failures:
        self.retry(countdown=0.2, exc=OSError(f"flake {self.request.retries}"))
    return f"ok after {self.request.retries} retries"


@app.task(autoretry_for=(OSError,), max_retries=2, retry_backoff=0.2, retry_jitter=False)
def always_oserror(path: str) -> None:
    _note(path, f"attempt {time.time():.3f}")
    raise OSError("disk on fire")


@app.task(soft_time_limit=0.5, time_limit=10)
def soft_limited() -> str:
    try:
        time.sleep(5)
    except SoftTimeLimitExceeded:
        return "cleaned up"
    return "not interrupted"


@app.task(time_limit=1)
def hard_limited() -> str:
    time.sleep(30)
    return "never"


@app.task(ignore_result=True)
def fire_and_forget(path: str) -> None:
    _note(path, "ran")


@app.task(bind=True)
def record_delivery(self: Task[str], path: str, label: str) -> str:
    """Append ``<label> <delivery count>`` to ``path``: tests read how often a message was counted as delivered."""
    _note(path, f"{label} {self.request.delivery_count}")
    return label
