"""Celery's benchmark tasks and configuration (runs on .bench-venv). The worker is ``celery -A celery_app worker``;
URLs and knobs come from the environment the runner sets (BENCH_*), because Celery's CLI imports this module.

Settings are Celery's documented throughput advice for many short tasks (docs/benchmarks.md has the sources):
a large ``worker_prefetch_multiplier`` (Optimizing guide, "Prefetch Limits"), early acks (the default), no task
events, no rate limits, JSON, results only for the tasks that need them.
"""

from __future__ import annotations

import os

from celery import Celery
from io_work import blocking_io_then_count

QUEUE = "bench"
#: The Optimizing guide suggests "64 or 128" for lots of short tasks; 64 here (BENCH_CELERY_PREFETCH overrides).
PREFETCH_MULTIPLIER = int(os.environ.get("BENCH_CELERY_PREFETCH", "64"))
#: Publisher confirms on RabbitMQ (kombu's ``confirm_publish``): off by default, like Celery's; BENCH_PEER_CONFIRMS=1
#: turns them on to compare against Taskfleet's always-confirmed publishes.
CONFIRMS = os.environ.get("BENCH_PEER_CONFIRMS") == "1"

SETTINGS = {
    "task_default_queue": QUEUE,
    "worker_prefetch_multiplier": PREFETCH_MULTIPLIER,
    "task_acks_late": False,
    "worker_send_task_events": False,
    "task_send_sent_event": False,
    "worker_disable_rate_limits": True,
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ["json"],
    "task_track_started": False,
    "broker_connection_retry_on_startup": True,
    "broker_transport_options": {"confirm_publish": True} if CONFIRMS else {},
}

app = Celery("bench", broker=os.environ.get("BENCH_BROKER_URL"), backend=os.environ.get("BENCH_BACKEND_URL"))
app.conf.update(SETTINGS)


@app.task(name="bench.noop", ignore_result=True)
def noop() -> None:
    return None


@app.task(name="bench.payload", ignore_result=True)
def payload(blob: str) -> None:
    return None


@app.task(name="bench.noop_result")
def noop_result() -> None:
    return None


@app.task(name="bench.add_one")
def add_one(x: int) -> int:
    """A chain step: its parent's result plus one."""
    return x + 1


@app.task(name="bench.count")
def count(results: list[object]) -> int:
    """A chord body: how many header results it got."""
    return len(results)



@app.task(name="bench.io_sleep", ignore_result=True)
def io_sleep() -> None:
    """The async scenario: 100 ms of simulated I/O the way this pool runs it (a blocking sleep), then one INCR of
    the finish counter (``BENCH_COUNTER_URL``)."""
    blocking_io_then_count()
