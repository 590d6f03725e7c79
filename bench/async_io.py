"""The async scenario (issue 21, "``async def`` tasks"): ``ASYNC_TASKS`` tasks that each wait ``IO_S`` of simulated
I/O, pre-queued, then drained by a worker of 2 processes; the figure is tasks per second from the first message
taken to the last task finished.

Each system runs the I/O the way its documentation says to run I/O-bound tasks on the pool it is benchmarked with:
Taskfleet an ``async def`` task (``await asyncio.sleep(IO_S)``) on ``taskfleet worker -c 2`` with the default
``--async-concurrency``; Celery prefork ``-c 2`` and Dramatiq ``-p 2 -t 8`` a plain ``time.sleep(IO_S)``. So the
best a peer can do is its slots / ``IO_S``: Celery 2 / 0.1 s = 20/s, Dramatiq 16 / 0.1 s = 160/s.

Finishes are counted, not queue emptiness (a prefetching worker empties the queue long before its tasks end): each
task, after its sleep, increments one Redis counter (``DONE_KEY``, on the run's result Redis, ``BENCH_COUNTER_URL``
in the worker's environment); Taskfleet's async task with ``redis.asyncio``, the peers' sync tasks with
``redis.Redis``: one INCR each, the same server, so the count costs every system the same. Runs on Redis and
RabbitMQ (the counter needs the Redis the run has beside them; SQLite runs skip it).

Standard library only (the peers' runners import this on .bench-venv); the Redis client is imported in the probe.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.apps.io_work import DONE_KEY, IO_S
from bench.measure import DRAIN_TIMEOUT_S, Depth, Worker, rate, tree_cpu_s

#: Tasks of the async scenario (the issue's figure).
ASYNC_TASKS = 2_000
#: The scenario fails when no task has finished for this long (seconds): e.g. a worker that cannot run the task.
STALL_S = 30.0
#: How often the runner reads the queue depth and the counter (seconds): small next to a ~1 s drain.
POLL_S = 0.005


class Counter:
    """The finished-task counter on the run's result Redis."""

    def __init__(self, url: str) -> None:
        import redis  # both venvs have it

        self._client = redis.Redis.from_url(url)

    def reset(self) -> None:
        self._client.delete(DONE_KEY)

    def value(self) -> int:
        return int(self._client.get(DONE_KEY) or 0)

    def close(self) -> None:
        self._client.close()


def run_async_io(system: Any, *, counter_url: str, cwd: Path, logs: Path,
                 log: Callable[[str], None]) -> dict[str, Any]:
    """Queue ``ASYNC_TASKS`` I/O tasks (``system.send_batch("io", n)``), start ``system.async_worker_command()``
    and time them from the first message taken to the ``ASYNC_TASKS``-th finish."""
    counter = Counter(counter_url)
    try:
        counter.reset()
        system.send_batch("io", ASYNC_TASKS)
        command, env = system.async_worker_command()
        with Worker(command, env={**env, "BENCH_COUNTER_URL": counter_url}, cwd=cwd,
                    log_path=logs / "async_io.log") as worker:
            result = _time_finishes(worker, system.depth, counter)
            result["worker_cpu_s"] = round(tree_cpu_s(worker.proc.pid), 2)  # start-up included
    finally:
        counter.close()
    result.update(tasks=ASYNC_TASKS, io_s=IO_S, per_task_cpu_ms=round(result["worker_cpu_s"] / ASYNC_TASKS * 1000, 3))
    log(f"async I/O ({ASYNC_TASKS} x {IO_S * 1000:.0f} ms): {result['per_s']}/s, drain {result['drain_s']} s, "
        f"worker CPU {result['worker_cpu_s']} s")
    return result


def _time_finishes(worker: Worker, depth: Callable[[], Depth], counter: Counter) -> dict[str, Any]:
    first: float | None = None
    deadline = worker.started_at + DRAIN_TIMEOUT_S
    last_done, last_change = 0, worker.started_at
    while True:
        now = time.perf_counter()
        if first is None and depth().ready < ASYNC_TASKS:
            first = now
        done = counter.value()
        if done >= ASYNC_TASKS:
            break
        if done != last_done:
            last_done, last_change = done, now
        worker.check_alive()
        if now > deadline or now - last_change > STALL_S:
            raise RuntimeError(f"{done} of {ASYNC_TASKS} I/O tasks finished, none for {now - last_change:.0f}s:\n"
                               f"{worker.log_tail()}")
        time.sleep(POLL_S)
    end = time.perf_counter()
    first = end if first is None else first
    drain_s = max(end - first, 1e-9)
    return {"startup_s": round(first - worker.started_at, 3), "drain_s": round(drain_s, 3),
            "per_s": rate(ASYNC_TASKS, drain_s)}
