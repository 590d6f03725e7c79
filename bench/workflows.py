"""The workflow scenarios (issue 16), for the systems whose adapter has ``chord`` and ``chain``:

- ``chord_1000``: a chord of ``CHORD_SIZE`` result-storing no-op header tasks and a body that counts their results,
  from ``apply_async`` to the body's result in the caller;
- ``chain_100``: a chain of ``CHAIN_LENGTH`` tasks, each adding 1 to its parent's result, from ``apply_async`` to the
  last task's result.

One worker (2 processes) runs them; one small warm-up of each, then ``RUNS`` timed runs, reported as the median
(``seconds``) and every sample. Standard library only (the peers' runners import this on .bench-venv).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from bench.measure import Worker

CHORD_SIZE = 1000
CHAIN_LENGTH = 100
RUNS = 3
WARMUP_SIZE = 10
#: One run that takes longer than this failed.
RUN_TIMEOUT_S = 300.0


class WorkflowSystem(Protocol):
    """The adapter methods these scenarios need (on top of ``bench.scenarios.System``)."""

    def chord(self, size: int, timeout_s: float) -> int:
        """Apply a chord of ``size`` no-op header tasks whose body returns how many results it got; return that."""

    def chain(self, length: int, timeout_s: float) -> int:
        """Apply a chain of ``length`` tasks, the first adding 1 to 0 and each next 1 to its parent's result;
        return the last result."""

    def worker_command(self) -> tuple[list[str], dict[str, str]]:
        """As in ``bench.scenarios.System``."""


def run_workflows(system: WorkflowSystem, *, cwd: Path, log_path: Path) -> dict[str, Any]:
    """Both scenarios on one worker; ``{"chord_1000": {...}, "chain_100": {...}}``."""
    command, env = system.worker_command()
    with Worker(command, env=env, cwd=cwd, log_path=log_path) as worker:
        _warm_up(system, worker)
        return {
            "chord_1000": _timed_runs(lambda: system.chord(CHORD_SIZE, RUN_TIMEOUT_S), CHORD_SIZE),
            "chain_100": _timed_runs(lambda: system.chain(CHAIN_LENGTH, RUN_TIMEOUT_S), CHAIN_LENGTH),
        }


def _warm_up(system: WorkflowSystem, worker: Worker) -> None:
    deadline = time.monotonic() + 60.0
    while True:  # the first chord also waits out the worker's start
        try:
            _expect(system.chord(WARMUP_SIZE, 5.0), WARMUP_SIZE)
            break
        except Exception:
            worker.check_alive()
            if time.monotonic() > deadline:
                raise
    _expect(system.chain(WARMUP_SIZE, 30.0), WARMUP_SIZE)


def _timed_runs(run: Callable[[], int], expected: int) -> dict[str, Any]:
    samples = []
    for _ in range(RUNS):
        began = time.perf_counter()
        _expect(run(), expected)
        samples.append(time.perf_counter() - began)
    return {"seconds": round(statistics.median(samples), 4), "samples_s": [round(s, 4) for s in samples]}


def _expect(got: int, expected: int) -> None:
    if got != expected:
        raise RuntimeError(f"workflow returned {got}, expected {expected}")
