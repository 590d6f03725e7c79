"""Where a RabbitMQ drain's CPU goes: ``python bench/run.py -m bench.rabbitmq_cpu [--tasks 20000] [--prefetch 8,32]
[--systems taskfleet,dramatiq]`` (docs/benchmarks.md, "RabbitMQ drain").

On one private RabbitMQ node, for Taskfleet at each ``--prefetch`` and for each peer: N no-ops are queued, then
drained by a fresh 2-process worker; the CPU seconds (user + system, Linux /proc) of the worker's supervisor, of its
children and of the server's ``beam.smp`` from the worker's launch to an empty queue are printed per message, with
the drain rate. CPU per message is what to compare on a shared machine: rates swing with the load, CPU much less.
Each measurement runs in its system's interpreter (.venv or .bench-venv), as the benchmark's runners do.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.measure import Worker, time_drain, tree_pids
from bench.scenarios import APPS_DIR

ROOT = Path(__file__).resolve().parents[1]


def process_cpu_s(pid: int) -> float:
    """User plus system CPU seconds of one process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_one(args: argparse.Namespace) -> dict[str, Any]:
    """One drain of ``args.tasks`` no-ops by ``args.system``'s worker: rate and CPU ms per message."""
    ns = argparse.Namespace(broker="rabbitmq", broker_url=args.broker_url, backend_url=args.backend_url,
                            prefetch=args.prefetch, confirms=False)
    system: Any
    if args.system == "taskfleet":
        from bench.taskfleet_runner import TaskfleetSystem
        system = TaskfleetSystem(ns)
    else:
        from bench.dramatiq_runner import DramatiqSystem
        system = DramatiqSystem(ns)
    try:
        system.send_batch("noop", args.tasks)
        command, env = system.worker_command()
        beam_before = process_cpu_s(args.beam_pid)
        with Worker(command, env=env, cwd=APPS_DIR, log_path=args.log) as worker:
            drained = time_drain(worker, system.depth, args.tasks)
            beam = process_cpu_s(args.beam_pid) - beam_before
            cpu = {pid: process_cpu_s(pid) for pid in tree_pids(worker.proc.pid)}
            supervisor = cpu.pop(worker.proc.pid, 0.0)
    finally:
        system.close()
    per_ms = 1000 / args.tasks
    return {"per_s": drained["per_s"], "supervisor_ms": round(supervisor * per_ms, 4),
            "children_ms": round(sum(cpu.values()) * per_ms, 4), "server_ms": round(beam * per_ms, 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--prefetch", default="8,32", help="comma-separated Taskfleet --prefetch values")
    parser.add_argument("--systems", default="taskfleet,dramatiq")
    parser.add_argument("--one", dest="system", default=None, help=argparse.SUPPRESS)
    for hidden in ("--broker-url", "--backend-url", "--log"):
        parser.add_argument(hidden, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--beam-pid", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.system is not None:  # one measurement, in this interpreter
        args.prefetch = int(args.prefetch) if args.prefetch else None
        args.log = Path(args.log)
        print(json.dumps(measure_one(args)))
        return 0
    return _orchestrate(args)


def _orchestrate(args: argparse.Namespace) -> int:
    from bench import peers_env
    from bench.servers import BenchServers

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    runs = [("taskfleet", p.strip()) for p in args.prefetch.split(",") if "taskfleet" in systems and p.strip()]
    runs += [(s, "") for s in systems if s != "taskfleet"]
    with BenchServers() as servers, servers.broker("rabbitmq") as slots:
        assert slots.rabbitmq is not None
        beam = next(pid for pid in slots.rabbitmq.processes() if Path(f"/proc/{pid}/comm").read_text().strip()
                    == "beam.smp")
        logs = servers.new_directory("logs")
        print(f"{'system':<24}{'drain /s':>10}{'supervisor':>12}{'children':>10}{'server':>10}  (CPU ms per message)")
        for system, prefetch in runs:
            python = sys.executable if system == "taskfleet" else str(peers_env.ensure_bench_venv())
            with slots.slot() as slot:
                out = subprocess.run(
                    [python, str(ROOT / "bench" / "run.py"), "-m", "bench.rabbitmq_cpu", "--one", system,
                     "--tasks", str(args.tasks), "--prefetch", prefetch, "--broker-url", slot.broker_url,
                     "--backend-url", slot.backend_url, "--beam-pid", str(beam),
                     "--log", str(logs / f"{system}{prefetch}.log")],
                    cwd=ROOT, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                print(f"{system}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
                return 1
            r = json.loads(out.stdout.strip().splitlines()[-1])
            name = f"{system} prefetch {prefetch}" if prefetch else system
            print(f"{name:<24}{r['per_s']:>10,.0f}{r['supervisor_ms']:>12.3f}{r['children_ms']:>10.3f}"
                  f"{r['server_ms']:>10.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
