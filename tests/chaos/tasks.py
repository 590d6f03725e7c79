"""The chaos suite's app and tasks, imported by the test process (to publish) and by the workers (``-A
tests.chaos.tasks:app``). Every task run writes to the ledger named by ``CHAOS_LEDGER`` (tests/support/ledger.py):
``S`` when it starts, ``E`` when its body ends, and the app's result backend writes ``R`` after it stored a final
state. Without ``CHAOS_LEDGER`` (a test process that only publishes) nothing is written.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from taskfleet import App, Task
from taskfleet.backends.base import ResultBackend, ResultRecord
from taskfleet.states import READY_STATES
from tests.support import ledger

QUEUE = "chaos"
#: Short leases, so a SIGSTOPped child loses its messages within the test (renewed every third of it).
VISIBILITY_TIMEOUT_S = 3.0
#: Low, so a healthy task wrongly counted as a failed delivery reaches it within one run.
MAX_DELIVERIES = 3
#: Small, so an oversized message is cheap to make.
MAX_MESSAGE_BYTES = 16 * 1024
FAILING_MAX_RETRIES = 2

ENV_LEDGER = "CHAOS_LEDGER"


def _ledger(*fields: object) -> None:
    path = os.environ.get(ENV_LEDGER)
    if path:
        ledger.append(path, *fields)


class LedgerApp(App):
    """An ``App`` whose result backend notes in the ledger each final state it has stored (``R``): the moment after
    which a redelivery must be recognised as finished and not run again."""

    @property
    def backend(self) -> ResultBackend | None:
        backend = super().backend
        if backend is not None and os.environ.get(ENV_LEDGER) and "store" not in vars(backend):
            original = backend.store

            def store(record: ResultRecord) -> None:
                original(record)
                if record.state in READY_STATES:
                    _ledger(ledger.STORED, record.task_id, record.retries, os.getpid(), f"{time.monotonic():.6f}",
                            record.state)

            backend.store = store  # type: ignore[method-assign]
        return backend


app = LedgerApp("chaos", default_queue=QUEUE, visibility_timeout_s=VISIBILITY_TIMEOUT_S,
                max_deliveries=MAX_DELIVERIES, max_message_bytes=MAX_MESSAGE_BYTES)


def _start(task: Task[Any], kind: str) -> None:
    req = task.request
    _ledger(ledger.START, req.id, req.retries, kind, os.getpid(), os.getppid(), f"{time.monotonic():.6f}",
            req.delivery_count)


def _end(task: Task[Any]) -> None:
    req = task.request
    _ledger(ledger.END, req.id, req.retries, os.getpid(), f"{time.monotonic():.6f}")


@app.task(bind=True)
def work(self: Task[int], ms: int) -> int:
    """A healthy task: sleeps ``ms`` milliseconds; its result is stored."""
    _start(self, "work")
    time.sleep(ms / 1000)
    _end(self)
    return ms


@app.task(bind=True, ignore_result=True)
def quiet(self: Task[None], ms: int) -> None:
    """A healthy task with ``ignore_result``: nothing is stored, so a lost ack makes it run again (the window)."""
    _start(self, "quiet")
    time.sleep(ms / 1000)
    _end(self)


@app.task(bind=True, autoretry_for=(OSError,), max_retries=FAILING_MAX_RETRIES, retry_backoff=0.1,
          retry_jitter=False)
def always_fails(self: Task[None]) -> None:
    """Poison: raises every time; after its retries it is FAILURE and dead-lettered."""
    _start(self, "fails")
    _end(self)
    raise OSError("always fails")


@app.task(bind=True)
def suicide(self: Task[None]) -> None:
    """Poison: kills its own process every time, until ``max_deliveries`` dead-letters it."""
    _start(self, "suicide")
    os.kill(os.getpid(), signal.SIGKILL)
