"""The scenarios every system runs, written once against a small ``System`` adapter (one per task queue).

A runner (``bench/taskfleet_runner.py``, ``bench/celery_runner.py``, ``bench/dramatiq_runner.py``) builds its
adapter and calls ``runner_main``; the scenarios then run in this order on one broker, all in the runner's process
(the producer) plus worker subprocesses started from ``System.worker_command``:

1. ``enqueue_delay``: N no-result no-ops sent one by one (``delay()`` / ``send()``), then drained (``drain_noop``);
2. ``enqueue_batch``: N more through the system's batch API, then purged;
3. ``drain_1kb``: N no-result tasks with a 1 KiB string argument (sent in batches), drained;
4. ``drain_results``: N no-ops whose results are stored (sent in batches), drained;
5. one idle worker: its memory after a warm-up (``idle_memory``), then ``rtt``: sequential send-and-get;
6. the workflow scenarios of ``bench/workflows.py`` (a chord of 1,000, a chain of 100), for systems that have them;
7. ``events_cost`` (systems with ``events_worker_command``: Taskfleet): the cost of task events, as the issue asks
   "drain with events on is at least 80% of drain with events off in the same benchmark run": ``EVENT_ROUNDS``
   rounds, each draining N queued no-ops with a worker without events and N with a worker started with ``-E``
   (in alternating order); the medians are compared (``on_over_off``; the median, not the best, since on a shared
   machine one undisturbed drain of either kind would decide a best-of), and the worker trees' CPU seconds too.

8. ``async_io`` (``bench/async_io.py``; systems with ``async_worker_command``, on Redis and RabbitMQ): 2,000 tasks
   that each wait 100 ms of simulated I/O, pre-queued, drained; tasks/s from the first message taken to the last
   task finished.

``--only events`` runs scenario 7 alone, ``--only async`` scenario 8.

Standard library only: the peers' runners import this on .bench-venv.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

from bench.async_io import run_async_io
from bench.measure import (
    IDLE_SETTLE_S,
    Depth,
    Worker,
    latency_summary,
    rate,
    time_drain,
    timed,
    tree_cpu_s,
    wait_empty,
)
from bench.workflows import CHAIN_LENGTH, CHORD_SIZE, run_workflows

ROOT = Path(__file__).resolve().parents[1]
#: Where the benchmark apps live; workers get it as their cwd and only extra import path.
APPS_DIR = ROOT / "bench" / "apps"
QUEUE = "bench"
#: The 1 KiB argument of the payload drain.
PAYLOAD = "x" * 1024
#: A worker has this long to start and answer its first round trip.
WORKER_START_TIMEOUT_S = 60.0
RTT_TIMEOUT_S = 10.0
RTT_WARMUP = 5
#: Rounds of the events-cost scenario (each: a drain with events off, then one with them on).
EVENT_ROUNDS = 5
#: What the issue asks of task events: drain with them on at least this fraction of drain with them off.
EVENTS_COST_FLOOR = 0.8

#: ``io``: the async scenario's task (``bench/async_io.py``), which waits 100 ms of simulated I/O.
Kind = Literal["noop", "payload", "result", "io"]
ONLY = ("all", "events", "async")
BROKERS = ("redis", "rabbitmq", "sqlite")


class System(Protocol):
    """What the scenarios need of a task queue on one broker."""

    name: str

    def settings(self) -> dict[str, Any]:
        """The settings this system runs with (recorded in the JSON and the table's footnotes)."""

    def send(self, kind: Kind) -> None:
        """Send one task of ``kind`` the ordinary way (``delay()``)."""

    def send_batch(self, kind: Kind, count: int) -> None:
        """Send ``count`` tasks of ``kind`` through the system's batch API."""

    def depth(self) -> Depth:
        """The bench queue's counts right now."""

    def purge(self) -> None:
        """Delete the bench queue's ready messages."""

    def worker_command(self) -> tuple[list[str], dict[str, str]]:
        """Command line and environment of a worker with 2 processes consuming the bench queue."""

    def round_trip(self, timeout_s: float) -> None:
        """Send a result-storing no-op and wait for its result."""

    def close(self) -> None:
        """Close the producer's connections."""


def task_args(kind: Kind) -> tuple[Any, ...]:
    """Positional arguments of a task of ``kind``: the 1 KiB string for ``payload``, none otherwise."""
    return (PAYLOAD,) if kind == "payload" else ()


def worker_env(extra: dict[str, str]) -> dict[str, str]:
    """A worker's environment: PATH and locale only (nothing from the caller's broker settings), ``APPS_DIR`` as
    the import path, plus ``extra``."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "HOME", "TMPDIR")}
    return {**keep, "PYTHONPATH": str(APPS_DIR), "PYTHONUNBUFFERED": "1", **extra}


def run_scenarios(system: System, *, tasks: int, rtt_count: int, logs: Path,
                  log: Callable[[str], None], only: str = "all", counter_url: str | None = None) -> dict[str, Any]:
    """Every scenario on ``system`` (``only="events"``: the events cost alone, ``"async"``: the async scenario
    alone, which needs the Redis of ``counter_url``); returns the measurements (see the module docstring)."""
    out: dict[str, Any] = {"settings": system.settings(), "tasks": tasks}
    wait_empty(system.depth)  # a fresh server or vhost: anything here would spoil the drains
    if only == "events":
        if hasattr(system, "events_worker_command"):
            out["events_cost"] = events_cost(system, tasks, logs, log)
        return out
    if only == "async":
        _async_io(system, out, counter_url, logs, log)
        return out

    seconds = timed(lambda: [system.send("noop") for _ in range(tasks)])
    out["enqueue_delay_per_s"] = rate(tasks, seconds)
    log(f"enqueue delay(): {out['enqueue_delay_per_s']}/s")
    out["drain_noop"] = _drain(system, tasks, logs / "drain_noop.log")
    log(f"drain no-op: {out['drain_noop']['per_s']}/s")

    seconds = timed(lambda: system.send_batch("noop", tasks))
    out["enqueue_batch_per_s"] = rate(tasks, seconds)
    log(f"enqueue batch: {out['enqueue_batch_per_s']}/s")
    system.purge()
    wait_empty(system.depth)

    seconds = timed(lambda: system.send_batch("payload", tasks))
    out["enqueue_batch_1kb_per_s"] = rate(tasks, seconds)
    out["drain_1kb"] = _drain(system, tasks, logs / "drain_1kb.log")
    log(f"drain 1 KiB: {out['drain_1kb']['per_s']}/s")

    seconds = timed(lambda: system.send_batch("result", tasks))
    out["enqueue_batch_result_per_s"] = rate(tasks, seconds)
    out["drain_results"] = _drain(system, tasks, logs / "drain_results.log")
    log(f"drain with results: {out['drain_results']['per_s']}/s")

    out["idle_memory"], out["rtt"] = _idle_and_rtt(system, rtt_count, logs / "rtt.log")
    log(f"idle memory: {out['idle_memory']['rss_mb']} MiB RSS, {out['idle_memory']['pss_mb']} MiB PSS, "
        f"{out['idle_memory']['cgroup_anon_mb']} MiB container RSS; "
        f"rtt p50 {out['rtt']['p50_ms']} ms")

    if hasattr(system, "chord") and hasattr(system, "chain"):
        out.update(run_workflows(system, cwd=APPS_DIR, log_path=logs / "workflows.log"))
        log(f"chord of {CHORD_SIZE}: {out['chord_1000']['seconds']} s; chain of {CHAIN_LENGTH}: "
            f"{out['chain_100']['seconds']} s")
    if hasattr(system, "events_worker_command"):
        out["events_cost"] = events_cost(system, tasks, logs, log)
    _async_io(system, out, counter_url, logs, log)
    return out


def _async_io(system: System, out: dict[str, Any], counter_url: str | None, logs: Path,
              log: Callable[[str], None]) -> None:
    """The async scenario into ``out["async_io"]`` when the system has it and a counter Redis is at hand; its
    failure is recorded there (``{"error": ...}``) rather than losing the run's other figures."""
    if counter_url is None or not hasattr(system, "async_worker_command"):
        return
    # A drain ends, where in-flight messages are not counted (RabbitMQ), with the prefetch window possibly still
    # held by the worker, which its graceful stop gives back: purged, or the queue would never be empty here.
    system.purge()
    wait_empty(system.depth)
    try:
        out["async_io"] = run_async_io(system, counter_url=counter_url, cwd=APPS_DIR, logs=logs, log=log)
    except Exception as exc:  # noqa: BLE001 - recorded in the report, with the worker's log tail
        out["async_io"] = {"error": f"{type(exc).__name__}: {exc}"[-1500:]}
        log(f"async I/O failed: {out['async_io']['error']}")


def events_cost(system: Any, tasks: int, logs: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """``EVENT_ROUNDS`` rounds of: N no-ops queued and drained by a worker without events, then N more drained by
    one with events (``system.events_worker_command()``); the best drain of each, and their ratio."""
    rounds = []
    kinds = [("off", system.worker_command), ("on", system.events_worker_command)]
    for n in range(EVENT_ROUNDS):
        drains = {}
        for events, command in kinds if n % 2 == 0 else kinds[::-1]:  # alternating: drift spreads over both
            system.send_batch("noop", tasks)
            drains[events] = _drain(system, tasks, logs / f"events_{events}_{n + 1}.log", command)
        rounds.append(drains)
        log(f"drain events off/on, round {n + 1}: {drains['off']['per_s']}/s, {drains['on']['per_s']}/s; worker CPU "
            f"{drains['off']['worker_cpu_s']} s, {drains['on']['worker_cpu_s']} s")
    off = statistics.median(r["off"]["per_s"] for r in rounds)
    on = statistics.median(r["on"]["per_s"] for r in rounds)
    cpu_off = statistics.median(r["off"]["worker_cpu_s"] for r in rounds)
    cpu_on = statistics.median(r["on"]["worker_cpu_s"] for r in rounds)
    result = {"off_per_s": off, "on_per_s": on, "on_over_off": round(on / off, 3) if off else None,
              "worker_cpu_s_off": cpu_off, "worker_cpu_s_on": cpu_on, "floor": EVENTS_COST_FLOOR, "rounds": rounds}
    log(f"drain with events: {result['on_over_off']} of drain without (floor {EVENTS_COST_FLOOR})")
    return result


def _drain(system: System, tasks: int, log_path: Path,
           worker_command: Callable[[], tuple[list[str], dict[str, str]]] | None = None) -> dict[str, Any]:
    command, env = (worker_command or system.worker_command)()
    with Worker(command, env=env, cwd=APPS_DIR, log_path=log_path) as worker:
        drained = time_drain(worker, system.depth, tasks)
        drained["worker_cpu_s"] = round(tree_cpu_s(worker.proc.pid), 2)  # start-up included
        return drained


def _idle_and_rtt(system: System, count: int, log_path: Path) -> tuple[dict[str, Any], dict[str, float]]:
    command, env = system.worker_command()
    with Worker(command, env=env, cwd=APPS_DIR, log_path=log_path, memory_cgroup=True) as worker:
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        while True:  # the first round trip also waits out the worker's start
            try:
                system.round_trip(timeout_s=5.0)
                break
            except Exception:
                worker.check_alive()
                if time.monotonic() > deadline:
                    raise
        for _ in range(RTT_WARMUP):
            system.round_trip(RTT_TIMEOUT_S)
        time.sleep(IDLE_SETTLE_S)
        memory = worker.memory()
        samples = []
        for _ in range(count):
            began = time.perf_counter()
            system.round_trip(RTT_TIMEOUT_S)
            samples.append((time.perf_counter() - began) * 1000)
    return memory, latency_summary(samples)


def runner_parser(description: str) -> argparse.ArgumentParser:
    """The arguments every runner takes from the orchestrator (``bench/__main__.py``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--broker", choices=BROKERS, required=True)
    parser.add_argument("--broker-url", required=True)
    parser.add_argument("--backend-url", required=True)
    parser.add_argument("--tasks", type=int, required=True)
    parser.add_argument("--rtt-count", type=int, required=True)
    parser.add_argument("--logs", type=Path, required=True, help="directory for the workers' logs")
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the measurements")
    parser.add_argument("--only", choices=ONLY, default="all",
                        help="events: only the events-cost scenario; async: only the async I/O scenario")
    return parser


def runner_main(parser: argparse.ArgumentParser, build: Callable[[argparse.Namespace], System]) -> None:
    """Parse the arguments, build the system, run every scenario and write the JSON to ``--out``."""
    args = parser.parse_args()
    args.logs.mkdir(parents=True, exist_ok=True)
    system = build(args)

    def log(line: str) -> None:
        print(f"    {system.name}/{args.broker}: {line}", file=sys.stderr, flush=True)

    try:
        result = run_scenarios(system, tasks=args.tasks, rtt_count=args.rtt_count, logs=args.logs, log=log,
                               only=args.only, counter_url=None if args.broker == "sqlite" else args.backend_url)
    finally:
        system.close()
    args.out.write_text(json.dumps(result, indent=2))
