"""Taskfleet against Celery and Dramatiq on Redis, RabbitMQ and (Taskfleet only) SQLite: ``make bench`` or

    .venv/bin/python bench/run.py [--brokers redis,rabbitmq,sqlite] [--systems taskfleet,celery,dramatiq]
                                     [--tasks 20000] [--rtt-count 300] [--quick] [--markdown]

For each broker, each system runs every scenario (bench/scenarios.py) in turn, on a fresh slot of private servers,
in its own runner process (Taskfleet on .bench-taskfleet-venv, the peers on .bench-venv, both created on first
use). The report goes to bench/results/<timestamp>.json and .png, the workers' logs to
bench/results/<timestamp>-logs/. docs/benchmarks.md explains the scenarios and the peers' settings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import peers_env, report, taskfleet_env
from bench.servers import BenchServers

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
ALL_BROKERS = ("redis", "rabbitmq", "sqlite")
#: Peers have no embedded broker: they run on Redis and RabbitMQ only.
PEER_BROKERS = ("redis", "rabbitmq")
QUICK_TASKS = 500
QUICK_RTT = 30
#: A runner that takes longer than this is stuck (a full run of one system on one broker takes a few minutes).
RUNNER_TIMEOUT_S = 3600.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brokers", default=",".join(ALL_BROKERS), help="comma-separated: redis,rabbitmq,sqlite")
    parser.add_argument("--systems", default=",".join(report.SYSTEMS),
                        help="comma-separated: taskfleet,celery,dramatiq")
    parser.add_argument("--tasks", type=int, default=20_000, help="tasks per enqueue and drain scenario")
    parser.add_argument("--rtt-count", type=int, default=300, help="sequential send-and-get round trips")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK_TASKS} tasks and {QUICK_RTT} round trips (overrides both)")
    parser.add_argument("--taskfleet-prefetch", type=int, default=None,
                        help="taskfleet worker --prefetch (default: the worker's own default)")
    parser.add_argument("--taskfleet-venv", choices=("runtime", "dev"), default="runtime",
                        help="runtime: run Taskfleet from .bench-taskfleet-venv (taskfleet[redis,rabbitmq], as users "
                             "install it; made on first use); dev: from this interpreter's venv (.venv)")
    parser.add_argument("--celery-prefetch-multiplier", type=int, default=64, help="worker_prefetch_multiplier")
    parser.add_argument("--peer-confirms", action="store_true",
                        help="turn on publisher confirms for the peers on RabbitMQ (Taskfleet always confirms)")
    parser.add_argument("--only", choices=("all", "events", "async"), default="all",
                        help="events: only the task-events cost (drain with events off, then on), Taskfleet only; "
                             "async: only the async I/O scenario (2,000 tasks x 100 ms), on Redis and RabbitMQ")
    parser.add_argument("--no-png", action="store_true", help="skip the bar chart")
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    parser.add_argument("--from-json", type=Path, metavar="RESULTS",
                        help="run nothing: print the table (and --markdown) of an earlier results file")
    args = parser.parse_args(argv)
    args.brokers = _split(parser, args.brokers, ALL_BROKERS, "broker")
    args.systems = _split(parser, args.systems, report.SYSTEMS, "system")
    if args.quick:
        args.tasks, args.rtt_count = QUICK_TASKS, QUICK_RTT
    if args.tasks < 1 or args.rtt_count < 2:
        parser.error("--tasks must be >= 1 and --rtt-count >= 2")
    return args


def _split(parser: argparse.ArgumentParser, value: str, known: tuple[str, ...], what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in items if v not in known]
    if unknown or not items:
        parser.error(f"unknown {what}(s) {unknown}: choose from {', '.join(known)}")
    return [k for k in known if k in items]  # canonical order


def runner_command(python: Path, system: str, broker: str, args: argparse.Namespace) -> list[str]:
    """The runner process of ``system`` (without the per-slot arguments)."""
    command = [str(python), str(ROOT / "bench" / "run.py"), "-m", f"bench.{system}_runner", "--broker", broker,
               "--tasks", str(args.tasks), "--rtt-count", str(args.rtt_count), "--only", args.only]
    if system == "taskfleet" and args.taskfleet_prefetch is not None:
        command += ["--prefetch", str(args.taskfleet_prefetch)]
    if system == "celery":
        command += ["--prefetch-multiplier", str(args.celery_prefetch_multiplier)]
    if system in report.PEERS and args.peer_confirms:
        command += ["--confirms"]
    return command


def run_system(command: list[str], slot_urls: tuple[str, str], logs: Path) -> dict[str, Any]:
    """Run one runner; its measurements, or ``{"error": ...}`` when it failed (the run goes on)."""
    out = logs / "result.json"
    full = [*command, "--broker-url", slot_urls[0], "--backend-url", slot_urls[1], "--logs", str(logs),
            "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKFLEET_", "BENCH_", "PYTHON"))}
    began = time.perf_counter()
    try:
        proc = subprocess.run(full, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=None, text=True,
                              timeout=RUNNER_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"runner timed out after {RUNNER_TIMEOUT_S}s (logs: {logs})"}
    if proc.returncode != 0 or not out.exists():
        return {"error": f"runner exited with {proc.returncode} (logs: {logs}): {proc.stdout[-500:]}"}
    result: dict[str, Any] = json.loads(out.read_text())
    result["runner_s"] = round(time.perf_counter() - began, 1)
    return result


def host_info() -> dict[str, Any]:
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()}


def taskfleet_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return f"{commit}+dirty" if git("status", "--porcelain", "--untracked-files=no") else commit


def _bench_venv(*, needed_by: list[str], png: bool) -> Path | None:
    """The bench venv's python when the peers or the chart need it; without it the chart is skipped, the peers
    cannot run."""
    if not needed_by and not png:
        return None
    try:
        return peers_env.ensure_bench_venv()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        if needed_by:
            raise SystemExit(f"cannot run {', '.join(needed_by)}: {exc}") from exc
        print(f"no chart: {exc}", file=sys.stderr)
        return None


def _taskfleet_python(which: str) -> Path:
    """Taskfleet's interpreter: ``runtime``, the runtime-only venv (docs/benchmarks.md says why), or ``dev``, this
    one (.venv)."""
    if which == "dev":
        return Path(sys.executable)
    try:
        return taskfleet_env.ensure_taskfleet_venv()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        raise SystemExit(f"cannot make {taskfleet_env.TASKFLEET_VENV.name} (--taskfleet-venv dev runs .venv): "
                         f"{exc}") from exc


def _venv_name(python: Path) -> str:
    """The venv of ``python`` as the report names it, e.g. ``.bench-taskfleet-venv``."""
    return python.parent.parent.name


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        loaded = json.loads(args.from_json.read_text())
        print(report.text_table(loaded))
        if args.markdown:
            print("\n" + report.markdown(loaded))
        return 0
    began = time.perf_counter()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    logs_root = RESULTS_DIR / f"{stamp}-logs"
    peers = [s for s in args.systems if s in report.PEERS] if set(args.brokers) & set(PEER_BROKERS) else []
    bench_python = _bench_venv(needed_by=peers, png=not args.no_png)
    taskfleet_python = _taskfleet_python(args.taskfleet_venv) if "taskfleet" in args.systems else None
    pythons = {"taskfleet": taskfleet_python or Path(sys.executable)}
    if bench_python is not None:
        pythons.update({p: bench_python for p in report.PEERS})
    versions = {"python": platform.python_version()}
    if taskfleet_python is not None:
        versions.update(taskfleet_env.taskfleet_versions(taskfleet_python))
    if bench_python is not None:
        versions.update(peers_env.installed_versions(bench_python))
    results: dict[str, dict[str, Any]] = {}
    with BenchServers() as servers:
        versions.update(servers.versions())
        for broker in args.brokers:
            systems = [s for s in args.systems if s == "taskfleet" or broker in PEER_BROKERS]
            if not systems or (args.only == "async" and broker not in PEER_BROKERS):  # its counter is on Redis
                continue
            print(f"{broker}:", flush=True)
            with servers.broker(broker) as slots:
                if (version := slots.version()) is not None:
                    versions[f"{broker}-server"] = version
                for system in systems:  # interleaved: every system on this broker before the next broker
                    print(f"  {system} ...", flush=True)
                    with slots.slot() as slot:
                        results.setdefault(broker, {})[system] = run_system(
                            runner_command(pythons[system], system, broker, args),
                            (slot.broker_url, slot.backend_url), logs_root / broker / system)
    full = {
        "meta": {
            "timestamp": stamp, "host": host_info(), "tasks": args.tasks, "rtt_count": args.rtt_count,
            "concurrency": 2, "quick": args.quick, "taskfleet_venv": _venv_name(pythons["taskfleet"]),
            "only": args.only, "taskfleet_commit": taskfleet_commit(),
            "versions": versions,
            "duration_s": round(time.perf_counter() - began, 1), "command": sys.argv,
        },
        "results": results,
    }
    json_path = RESULTS_DIR / f"{stamp}.json"
    report.write_json(full, json_path)
    print("\n" + report.text_table(full))
    if args.markdown:
        print("\n" + report.markdown(full))
    print(f"\nresults: {json_path.relative_to(ROOT)}; worker logs: {logs_root.relative_to(ROOT)}/")
    if not args.no_png and bench_python is not None:
        png_path = json_path.with_suffix(".png")
        error = report.write_png(json_path, png_path, bench_python)
        print(f"chart: {png_path.relative_to(ROOT)}" if error is None else f"chart failed: {error}")
    print(f"took {full['meta']['duration_s']}s")
    failed = [f"{b}/{s}" for b, r in results.items() for s, v in r.items() if "error" in v]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
