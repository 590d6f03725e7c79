"""How many CPUs this process may use: the default worker concurrency (``taskfleet worker -c``).

``os.cpu_count()`` counts the host's CPUs: a pod limited to 2 CPUs on a 64-CPU node would fork 64 children, which
the kernel then throttles to 2 CPUs' worth of time. What the process may use is the smallest of

- the CPUs it may run on: its affinity (``os.sched_getaffinity``, which a cgroup ``cpuset`` and ``taskset``
  restrict; ``os.process_cpu_count()`` on Python 3.13+, which also honours ``-X cpu_count``), and
- its cgroup's CPU bandwidth limit, quota / period, rounded up (a limit of 1.5 CPUs allows 2 children, 0.5 allows
  1): cgroup v2 ``cpu.max``, or v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, the lowest of the process's
  cgroup and its ancestors (Kubernetes sets the container's ``resources.limits.cpu`` there),

and at least 1. This is what loky's ``cpu_count`` and Go's default ``GOMAXPROCS`` (since 1.25) do; a CPU
*request* (``cpu.weight``, ``cpu.shares``) is a share under contention, not a limit, and does not count.

The cgroup files are read under ``root`` (``/`` in production), so tests hand in a fake tree.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["available_cpus", "cgroup_cpu_limit", "cpus_allowed", "usable_cpus"]

_ROOT = Path("/")
_CGROUP_FS = "sys/fs/cgroup"


def usable_cpus(*, root: Path = _ROOT, available: int | None = None) -> int:
    """The CPUs this process may use (module docstring): the default of ``taskfleet worker -c`` and
    ``WorkerSettings.concurrency``.

    Args:
        root: where ``/proc`` and ``/sys/fs/cgroup`` are found; ``/`` but in tests.
        available: the CPUs the process may run on; default ``available_cpus()``.
    """
    return cpus_allowed(available_cpus() if available is None else available, cgroup_cpu_limit(root))


def cpus_allowed(available: int, limit: float | None) -> int:
    """``available`` CPUs capped by a cgroup bandwidth ``limit`` in CPUs (None: unlimited), rounded up, at least 1."""
    if limit is not None:
        available = min(available, math.ceil(limit))
    return max(1, available)


def available_cpus() -> int:
    """The CPUs this process may run on: its affinity where the platform has one, else every CPU."""
    process_cpu_count = getattr(os, "process_cpu_count", None)  # Python 3.13+
    if process_cpu_count is not None:
        return int(process_cpu_count() or 1)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def cgroup_cpu_limit(root: Path = _ROOT) -> float | None:
    """The CPU bandwidth limit of this process's cgroups in CPUs (quota / period), the lowest of its cgroup and
    their ancestors on cgroup v2 and v1 alike; None when there is none or nothing can be read (not Linux)."""
    limits = [limit for folder, kind in _cgroup_folders(root)
              if (limit := (_v2_limit(folder) if kind == "v2" else _v1_limit(folder))) is not None]
    return min(limits, default=None)


def _cgroup_folders(root: Path) -> Iterator[tuple[Path, str]]:
    """The folders that may hold a CPU limit for this process: for each of its cgroups that can carry one (the v2
    one, the v1 one with the ``cpu`` controller), the cgroup's folder and each ancestor up to the mount. Folders
    that do not exist are skipped: in a container the mount is usually the container's own cgroup, while
    ``/proc/self/cgroup`` may show its path on the host."""
    try:
        lines = (root / "proc/self/cgroup").read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:
            mounts, kind = [root / _CGROUP_FS], "v2"
        elif "cpu" in controllers.split(","):
            mounts, kind = list(dict.fromkeys([root / _CGROUP_FS / controllers, root / _CGROUP_FS / "cpu"])), "v1"
        else:
            continue
        parts = [p for p in path.split("/") if p and p not in (".", "..")]
        for mount in mounts:
            if mount.is_dir():
                for depth in range(len(parts), -1, -1):
                    folder = mount.joinpath(*parts[:depth])
                    if folder.is_dir():
                        yield folder, kind
                break


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _v2_limit(folder: Path) -> float | None:
    """``cpu.max`` is ``"$MAX $PERIOD"`` in microseconds; ``max`` is no limit."""
    text = _read(folder / "cpu.max")
    if not text:
        return None
    quota, _, period = text.partition(" ")
    return _ratio(quota, period or "100000")


def _v1_limit(folder: Path) -> float | None:
    """``cpu.cfs_quota_us`` (``-1``: no limit) over ``cpu.cfs_period_us``."""
    quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
    return None if quota is None or period is None else _ratio(quota, period)


def _ratio(quota: str, period: str) -> float | None:
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:  # "max", or something unexpected: no limit we can use
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None
