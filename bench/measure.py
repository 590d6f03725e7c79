"""Measuring tools shared by every system's runner: worker process trees, their memory, drain timing, percentiles.

Standard library only (plus ``redis``/``pika`` inside the probes), because this module is imported both by
Taskfleet's runner on .venv and by the peers' runners on .bench-venv.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.cgroup import MemoryCgroup

#: Depth poll period while draining: short against a drain of seconds, long enough not to load the broker.
POLL_INTERVAL_S = 0.02
#: A drain that has not finished by then failed (the worker died or is stuck).
DRAIN_TIMEOUT_S = 900.0
STOP_TIMEOUT_S = 30.0
#: How long a worker sits idle after its warm-up task before its memory is read.
IDLE_SETTLE_S = 3.0


@dataclass(frozen=True, slots=True)
class Depth:
    """``ready``: waiting in the queue; ``outstanding``: ready + fetched-but-unacked where the broker can count the
    latter exactly (Redis, SQLite), else ready only (RabbitMQ over AMQP: see docs/benchmarks.md)."""

    ready: int
    outstanding: int


class Worker:
    """A worker command run as its own process group, its output in ``log_path``."""

    def __init__(self, command: Sequence[str], *, env: dict[str, str], cwd: Path, log_path: Path,
                 memory_cgroup: bool = False) -> None:
        """``memory_cgroup``: run the tree in a memory cgroup of its own (``bench.cgroup``), when the machine
        lets us, so that ``memory`` reports its anonymous memory as Kubernetes would."""
        self.command = list(command)
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.cgroup = MemoryCgroup.create() if memory_cgroup else None
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(self.command, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=None if self.cgroup is None else self.cgroup.enter)

    def check_alive(self) -> None:
        """Raise ``RuntimeError`` with the log's tail when the worker has exited."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker exited with {self.proc.returncode}: {self.command}\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def memory(self) -> dict[str, Any]:
        """Memory of the whole process tree (see ``tree_memory``), with ``cgroup_anon_mb``: its cgroup's anonymous
        memory (None when it runs in none)."""
        return {**tree_memory(self.proc.pid),
                "cgroup_anon_mb": None if self.cgroup is None else self.cgroup.anon_mb()}

    def stop(self) -> None:
        """SIGTERM (every system's graceful stop), then SIGKILL the group; leftovers in the group are killed too."""
        tree = tree_pids(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(STOP_TIMEOUT_S)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for pid in tree:  # a child that left the group (none should)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if self.cgroup is not None:
            self.cgroup.remove()
        self._log.close()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in (b"Z", b"X") else int(fields[1])


def tree_pids(root: int) -> list[int]:
    """``root`` and its live descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (parent := _parent_of(int(entry.name))) is not None:
            children.setdefault(parent, []).append(int(entry.name))
    if _parent_of(root) is None:
        return []
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def _kb(path: str, field: str) -> int | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def tree_memory(root: int) -> dict[str, Any]:
    """Sum of VmRSS and of PSS over ``root``'s process tree, in MiB. RSS counts pages shared between the forked
    children once per process (it overstates a prefork tree); PSS splits each shared page among its sharers, so it
    adds up to what the tree really costs. ``pss_mb`` is None when smaps_rollup is unreadable."""
    pids = tree_pids(root)
    rss = [_kb(f"/proc/{pid}/status", "VmRSS:") or 0 for pid in pids]
    pss = [_kb(f"/proc/{pid}/smaps_rollup", "Pss:") for pid in pids]
    return {
        "processes": len(pids),
        "rss_mb": round(sum(rss) / 1024, 1),
        "pss_mb": round(sum(p for p in pss if p is not None) / 1024, 1) if all(p is not None for p in pss) else None,
        "rss_mb_each": [round(r / 1024, 1) for r in rss],
    }


def time_drain(worker: Worker, depth: Callable[[], Depth], total: int) -> dict[str, Any]:
    """Wait until the queue that holds ``total`` messages is empty while ``worker`` consumes it.

    ``startup_s``: worker launch until the first message left the queue; ``drain_s``: from then until nothing is
    outstanding; ``per_s`` = ``total / drain_s`` (the headline: throughput without interpreter start-up, which each
    system pays once per pod); ``wall_s``: launch to empty.
    """
    first: float | None = None
    deadline = worker.started_at + DRAIN_TIMEOUT_S
    while True:
        now_depth = depth()
        now = time.perf_counter()
        if first is None and now_depth.ready < total:
            first = now
        if now_depth.outstanding == 0 and now_depth.ready == 0:
            break
        worker.check_alive()
        if now > deadline:
            raise RuntimeError(f"drain not finished after {DRAIN_TIMEOUT_S}s ({now_depth}):\n{worker.log_tail()}")
        time.sleep(POLL_INTERVAL_S)
    end = time.perf_counter()
    first = end if first is None else first
    drain_s = max(end - first, 1e-9)
    return {
        "startup_s": round(first - worker.started_at, 3),
        "drain_s": round(drain_s, 3),
        "wall_s": round(end - worker.started_at, 3),
        "per_s": round(total / drain_s, 1),
    }


def tree_cpu_s(root: int) -> float:
    """User plus system CPU seconds used so far by ``root``'s live process tree (Linux /proc; a process that has
    exited is not counted). Read before the tree stops, it is what a drain cost the worker whatever else ran on the
    machine: a steadier figure than a rate on a loaded host."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in tree_pids(root):
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        except (OSError, IndexError, ValueError):
            continue
    return total / ticks


def wait_empty(depth: Callable[[], Depth], timeout_s: float = 30.0) -> None:
    """Wait until nothing is ready or outstanding (after a purge); ``RuntimeError`` past ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while (d := depth()).ready or d.outstanding:
        if time.monotonic() > deadline:
            raise RuntimeError(f"queue not empty after {timeout_s}s: {d}")
        time.sleep(POLL_INTERVAL_S)


def rate(count: int, seconds: float) -> float:
    """``count / seconds`` rounded for the report."""
    return round(count / max(seconds, 1e-9), 1)


def timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn()`` took."""
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def latency_summary(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99 (inclusive quantiles), mean and max of round-trip samples in milliseconds."""
    q = statistics.quantiles(samples_ms, n=100, method="inclusive")
    return {"p50_ms": round(q[49], 3), "p95_ms": round(q[94], 3), "p99_ms": round(q[98], 3),
            "mean_ms": round(statistics.fmean(samples_ms), 3), "max_ms": round(max(samples_ms), 3),
            "samples": len(samples_ms)}


class RedisProbe:
    """Counts keys on the broker's Redis with one pipelined round trip (LLEN for lists, HLEN for hashes)."""

    def __init__(self, url: str) -> None:
        import redis  # imported here: both venvs have it, but only the Redis runs need it

        self._client = redis.Redis.from_url(url)

    def lengths(self, lists: Sequence[str] = (), hashes: Sequence[str] = ()) -> list[int]:
        pipe = self._client.pipeline(transaction=False)
        for key in lists:
            pipe.llen(key)
        for key in hashes:
            pipe.hlen(key)
        return [int(n) for n in pipe.execute()]

    def close(self) -> None:
        self._client.close()


class AmqpProbe:
    """Ready count of a RabbitMQ queue from a passive declare (exact; unacked messages are not counted)."""

    def __init__(self, url: str) -> None:
        import pika

        self._connection = pika.BlockingConnection(pika.URLParameters(url))
        self._channel = self._connection.channel()

    def ready(self, queue: str) -> int:
        import pika.exceptions

        try:
            count: int = self._channel.queue_declare(queue, passive=True).method.message_count
        except pika.exceptions.ChannelClosedByBroker as exc:  # not declared yet: nothing in it
            if exc.reply_code != 404:
                raise
            self._channel = self._connection.channel()
            return 0
        return count

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._connection.close()
