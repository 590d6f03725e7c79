"""The dashboard history's benchmark: fill a history file with synthetic tasks through ``apply_events`` (in batches,
as the ingester does), then time every query the dashboard's pages make, and the process's peak memory.

    nice -n 19 .venv/bin/python bench/dashboard_history.py                  # 1,000,000 tasks in a temp file
    .venv/bin/python bench/dashboard_history.py --tasks 100000 --path /tmp/h.db --keep

The tasks span the last 24 hours: 20 task names, 5 queues, 12 workers; 90% succeed, 5% fail (with a traceback),
3% are retried once then succeed, 2% are still running; a third have a ``task-sent`` too, some arriving after their
worker's events. Each query runs ``--runs`` times; the table shows the median and the max in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "dashboard"))
sys.path.insert(0, str(ROOT / "sdk"))

from taskfleet.dashboard import model  # noqa: E402
from taskfleet.dashboard.history.settings import HistorySettings  # noqa: E402
from taskfleet.dashboard.history.store import HistoryStore  # noqa: E402

NAMES = [f"app.tasks.task_{i:02d}" for i in range(20)]
QUEUES = ["default", "emails", "reports", "billing", "media"]
WORKERS = [f"worker-{i}:{1000 + i}" for i in range(12)]
TRACEBACK = "Traceback (most recent call last):\n  File \"app/tasks.py\", line 42, in run\nValueError: bad input\n"


def task_events(i: int, start: float, rng: random.Random) -> list[dict[str, Any]]:
    """The events of synthetic task ``i``, first seen at ``start``."""
    uuid = f"{rng.getrandbits(128):032x}"
    name, queue, worker = NAMES[i % len(NAMES)], QUEUES[i % len(QUEUES)], WORKERS[i % len(WORKERS)]
    args, kwargs = f"({i}, 'customer-{i % 50_000}')", f"{{'order': 'ord-{i}'}}"
    common = {"uuid": uuid, "name": name, "queue": queue}
    runtime = rng.lognormvariate(-4, 1.2)
    events: list[dict[str, Any]] = []
    if i % 3 == 0:
        events.append({"type": "task-sent", "timestamp": start, **common, "args": args, "kwargs": kwargs,
                       "retries": 0, "root_id": uuid})
    t = start + 0.002
    fate = rng.random()
    attempts = 2 if 0.95 <= fate < 0.98 else 1
    for attempt in range(attempts):
        events.append({"type": "task-received", "timestamp": t, **common, "worker": worker, "args": args,
                       "kwargs": kwargs, "retries": attempt, "root_id": uuid})
        events.append({"type": "task-started", "timestamp": t, **common, "worker": worker})
        t += runtime
        if fate >= 0.98:
            break  # still running
        if attempt + 1 < attempts:
            events.append({"type": "task-retried", "timestamp": t, **common, "worker": worker,
                           "exception": "TimeoutError: upstream"})
            t += 1.0
        elif fate < 0.90 or fate >= 0.95:
            events.append({"type": "task-succeeded", "timestamp": t, **common, "worker": worker,
                           "runtime": runtime, "result": "'ok'"})
        else:
            events.append({"type": "task-failed", "timestamp": t, **common, "worker": worker,
                           "exception": "ValueError: bad input", "traceback": TRACEBACK, "runtime": runtime})
    if i % 3 == 0 and i % 30 == 0:
        events.append(events.pop(0))  # a late task-sent, after its worker's events
    return events


def batches(total: int, *, now: float, batch: int, seed: int) -> Iterator[list[dict[str, Any]]]:
    rng = random.Random(seed)
    span = 24 * 3600.0
    pending: list[dict[str, Any]] = []
    for i in range(total):
        pending.extend(task_events(i, now - span + span * i / total, rng))
        if len(pending) >= batch:
            yield pending
            pending = []
    if pending:
        yield pending


def timed(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), max(times)


def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--tasks", type=int, default=1_000_000)
    cli.add_argument("--batch", type=int, default=1000, help="events per apply_events call")
    cli.add_argument("--runs", type=int, default=7)
    cli.add_argument("--path", default=None, help="the history file (default: a temporary one)")
    cli.add_argument("--keep", action="store_true", help="keep the file; with an existing --path, skip the fill")
    cli.add_argument("--prune", action="store_true", help="then time a prune that drops the oldest 10%%")
    args = cli.parse_args()
    folder = None if args.path else tempfile.mkdtemp(prefix="taskfleet-history-bench-")
    path = args.path or os.path.join(str(folder), "history.db")
    fill = not (args.keep and os.path.exists(path))
    store = HistoryStore(HistorySettings(path=path))
    now = time.time()
    if fill:
        t0, events = time.perf_counter(), 0
        for batch in batches(args.tasks, now=now, batch=args.batch, seed=1):
            store.apply_events(batch, cursor=str(events))
            events += len(batch)
        elapsed = time.perf_counter() - t0
        print(f"filled {args.tasks:,} tasks ({events:,} events) in {elapsed:.1f} s: "
              f"{args.tasks / elapsed:,.0f} tasks/s, {events / elapsed:,.0f} events/s; "
              f"file {sum(os.path.getsize(p) for p in (path, path + '-wal') if os.path.exists(p)) / 2**20:,.0f} MB")
        print(f"peak RSS after the fill: {peak_rss_mb():.0f} MB")
    first = store.tasks(model.TaskQuery())
    deep = first
    for _ in range(20):  # a cursor 1,000 rows deep, then the 10,000th row's
        if deep.next_cursor is None:
            break
        deep = store.tasks(model.TaskQuery(before=deep.next_cursor))
    deep_cursor = str(deep.next_cursor)
    some = first.tasks[len(first.tasks) // 2]
    oldest = store.tasks(model.TaskQuery(since=now - 86400, until=now - 86400 + 3600))
    cases: list[tuple[str, Callable[[], object]]] = [
        ("first page (50)", lambda: store.tasks(model.TaskQuery())),
        ("name", lambda: store.tasks(model.TaskQuery(name=NAMES[3]))),
        ("state FAILURE", lambda: store.tasks(model.TaskQuery(state=model.FAILURE))),
        ("state STARTED (rare)", lambda: store.tasks(model.TaskQuery(state=model.STARTED))),
        ("queue", lambda: store.tasks(model.TaskQuery(queue=QUEUES[2]))),
        ("worker", lambda: store.tasks(model.TaskQuery(worker=WORKERS[5]))),
        ("name + state", lambda: store.tasks(model.TaskQuery(name=NAMES[4], state=model.FAILURE))),
        ("queue + state", lambda: store.tasks(model.TaskQuery(queue=QUEUES[1], state=model.FAILURE))),
        ("task id prefix", lambda: store.tasks(model.TaskQuery(task_id=some.task_id[:6]))),
        ("time window (oldest hour)", lambda: store.tasks(model.TaskQuery(since=now - 86400,
                                                                          until=now - 86400 + 3600))),
        ("deep page (cursor)", lambda: store.tasks(model.TaskQuery(before=deep_cursor))),
        ("text: rare", lambda: store.tasks(model.TaskQuery(text="ord-12345'"))),
        ("text: common", lambda: store.tasks(model.TaskQuery(text="customer-1"))),
        ("text + name", lambda: store.tasks(model.TaskQuery(text="customer-42", name=NAMES[2]))),
        ("task", lambda: store.task(some.task_id)),
        ("timeline", lambda: store.timeline(some.task_id)),
        ("workflow", lambda: store.workflow(some.task_id)),
        ("task names", store.task_names),
        ("buckets 24 h / 5 min, all", lambda: store.buckets(since=now - 86400, until=now, step_s=300)),
        ("buckets 24 h / 5 min, name", lambda: store.buckets(since=now - 86400, until=now, step_s=300,
                                                             name=NAMES[7])),
        ("buckets 24 h / 1 min, queue", lambda: store.buckets(since=now - 86400, until=now, step_s=60,
                                                              queue=QUEUES[0])),
    ]
    print(f"\n{'query':<32}{'median ms':>10}{'max ms':>10}{'rows':>6}")
    for label, fn in cases:
        result = fn()
        rows = len(result.tasks) if isinstance(result, model.TaskPage) else (
            len(result) if isinstance(result, list) else int(result is not None))
        median, worst = timed(fn, args.runs)
        print(f"{label:<32}{median:>10.2f}{worst:>10.2f}{rows:>6}")
    print(f"\noldest hour's first page: {len(oldest.tasks)} rows; peak RSS: {peak_rss_mb():.0f} MB")
    store.close()
    if args.prune:
        keep = int(args.tasks * 0.9)
        pruner = HistoryStore(HistorySettings(path=path, max_tasks=keep))
        idle = HistoryStore(HistorySettings(path=path))
        t0 = time.perf_counter()
        nothing = idle.prune(now=now)
        idle_ms = (time.perf_counter() - t0) * 1000
        idle.close()
        t0 = time.perf_counter()
        dropped = pruner.prune(now=now)
        print(f"prune with nothing to drop: {idle_ms:.0f} ms ({nothing}); prune to {keep:,} tasks: dropped "
              f"{dropped:,} in {time.perf_counter() - t0:.1f} s")
        pruner.close()
    if not args.keep and folder is not None:
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        os.rmdir(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
