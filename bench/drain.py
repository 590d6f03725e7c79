"""Taskfleet on Redis and RabbitMQ, measured: enqueue rate, drain throughput of pre-enqueued no-op tasks with a
prefork worker, and delay().get() round-trip latency. Starts its own private servers (results always go to a
private Redis). Run with ``make bench``.

    python bench/drain.py --brokers redis,rabbitmq --tasks 10000 --concurrency 2 --prefetch 1,4,16

The drain ends when the queue is empty: on RabbitMQ that is its exact ready count (a passive declare, no management
API), so up to concurrency x prefetch tasks may still be finishing: negligible against thousands.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import tasks  # noqa: E402
from taskfleet import App  # noqa: E402
from tests.support.rabbitmq_server import RabbitMQServer  # noqa: E402
from tests.support.servers import RedisServer  # noqa: E402
from tests.support.workers import children_of  # noqa: E402


def start_worker(app: App, concurrency: int, prefetch: int) -> subprocess.Popen[bytes]:
    broker, backend = app.settings.broker_url, app.settings.result_backend_url
    assert broker is not None
    assert backend is not None
    cmd = [sys.executable, "-m", "taskfleet", "worker", "-A", "bench.tasks:app", "-Q", "bench", "-c", str(concurrency),
           "--prefetch", str(prefetch), "--broker", broker, "--result-backend", backend, "-l", "warning",
           "--log-format", "json", "--health-port", "0"]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(timeout=30)


def enqueue_rate(app: App, n: int) -> float:
    began = time.perf_counter()
    for _ in range(n):
        tasks.noop.delay()
    return n / (time.perf_counter() - began)


def drain(app: App, n: int, concurrency: int, prefetch: int, *, results: bool) -> float:
    task = tasks.noop if results else tasks.noop_no_result
    for _ in range(n):
        task.delay()
    began = time.perf_counter()
    worker = start_worker(app, concurrency, prefetch)
    try:
        while app.broker.queue_depth("bench").total:
            time.sleep(0.01)
        elapsed = time.perf_counter() - began
    finally:
        stop(worker)
    return n / elapsed


def round_trip(app: App, n: int, concurrency: int, prefetch: int) -> dict[str, float]:
    worker = start_worker(app, concurrency, prefetch)
    try:
        tasks.noop.delay().get(timeout=30)  # warm up: children connected
        samples = []
        for _ in range(n):
            began = time.perf_counter()
            tasks.noop.delay().get(timeout=10)
            samples.append((time.perf_counter() - began) * 1000)
    finally:
        stop(worker)
    q = statistics.quantiles(samples, n=100)
    return {"p50_ms": round(q[49], 3), "p95_ms": round(q[94], 3), "p99_ms": round(q[98], 3)}


def idle_rss_mb(app: App, concurrency: int) -> float:
    worker = start_worker(app, concurrency, 4)
    try:
        time.sleep(3)
        pids = [worker.pid, *children_of(worker.pid)]
        total_kb = 0
        for pid in pids:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        return round(total_kb / 1024, 1)
    finally:
        stop(worker)


def measure(app: App, args: argparse.Namespace) -> dict[str, object]:
    """Every scenario on the broker ``app`` is configured for."""
    report: dict[str, object] = {}
    report["enqueue_per_s_delay"] = round(enqueue_rate(app, 5000))
    app.broker.purge("bench")
    drains = {}
    for prefetch in (int(p) for p in args.prefetch.split(",")):
        drains[f"prefetch={prefetch}"] = {
            "no_results_per_s": round(drain(app, args.tasks, args.concurrency, prefetch, results=False)),
            "with_results_per_s": round(drain(app, args.tasks, args.concurrency, prefetch, results=True)),
        }
        print(f"  prefetch={prefetch}: {drains[f'prefetch={prefetch}']}", flush=True)
    report["drain"] = drains
    report["round_trip"] = round_trip(app, args.rtt, args.concurrency, 4)
    report["idle_rss_mb_supervisor_plus_children"] = idle_rss_mb(app, args.concurrency)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brokers", default="redis,rabbitmq", help="comma-separated: redis, rabbitmq")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--prefetch", default="1,4,16", help="comma-separated prefetch values to compare")
    parser.add_argument("--rtt", type=int, default=300, help="sequential delay().get() samples")
    args = parser.parse_args()
    report: dict[str, object] = {"tasks": args.tasks, "concurrency": args.concurrency}
    app = tasks.app
    with RedisServer() as redis:
        for broker in args.brokers.split(","):
            print(f"{broker}:", flush=True)
            if broker == "redis":
                app.configure(broker=f"{redis.url}/0", result_backend=f"{redis.url}/1")
                report[broker] = measure(app, args)
            elif broker == "rabbitmq":
                with RabbitMQServer() as rabbitmq:
                    app.configure(broker=rabbitmq.url, result_backend=f"{redis.url}/1")
                    report[broker] = measure(app, args)
                    app.close()
            else:
                parser.error(f"unknown broker {broker!r}")
            redis.flushall()
    app.close()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
