"""Run deliveries as a worker child does, in this process: the test app on the in-memory broker and result
backend, an ``Executor`` for each delivery and a ``Settler`` that carries out its decision (unit tests of what
happens around a run: hooks, signals, state updates)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from taskfleet import App
from taskfleet.worker import events
from taskfleet.worker.executor import Executor, Outcome
from taskfleet.worker.holdings import Held
from taskfleet.worker.settler import Settler


class _Events:
    """A reporter that keeps what a Settler sends the supervisor."""

    def __init__(self) -> None:
        self.sent: list[events.Event] = []

    def send(self, event: events.Event) -> None:
        self.sent.append(event)


@contextmanager
def in_memory(app: App, **settings: Any) -> Iterator[App]:
    """``app`` on a fresh in-memory broker and result backend (and ``settings``) for the block; restored after."""
    previous_alarm = signal.getsignal(signal.SIGALRM)  # the Executor installs its own SIGALRM handler
    previous = app.settings
    app.configure(broker="memory://", result_backend="memory://", **settings)
    try:
        yield app
    finally:
        app.close()
        app.settings = previous
        signal.signal(signal.SIGALRM, previous_alarm)


def run_next(app: App, queue: str = "tests", *, wait_s: float = 0) -> Outcome:
    """Fetch the next ready delivery of ``queue`` (waiting up to ``wait_s``), run it through an Executor and settle
    its decision as a worker child does."""
    deliveries = app.broker.fetch([queue], max_messages=1, timeout_s=wait_s)
    assert deliveries, f"nothing ready on queue {queue!r}"
    outcome = Executor(app, app.backend, on_start=lambda started: None).run(deliveries[0])
    settler = Settler(app.broker, _Events())  # type: ignore[arg-type]
    settler.settle(Held(1, deliveries[0]), outcome)
    settler.flush()
    return outcome
