"""A memory cgroup of its own for a worker tree, to read its memory the way Kubernetes does.

A pod's memory on a Kubernetes dashboard comes from its container's cgroup, not from the processes' RSS: cAdvisor's
``container_memory_rss`` is the cgroup's anonymous memory (``total_rss`` in cgroup v1's ``memory.stat``, ``anon``
in v2), and ``kubectl top`` shows the working set (usage less inactive file pages). The cgroup charges a page once,
however many forked processes share it, where the sum of VmRSS counts it once per process. Only the anonymous part
is reported: file pages (the interpreter, the libraries, the venv's ``.pyc``) are charged to whichever cgroup first
read them, so on a machine where another run read them already they would favour whoever came second.

Needs a writable memory controller (root, cgroup v1's ``/sys/fs/cgroup/memory`` or v2 with ``memory`` enabled);
``MemoryCgroup.create`` returns None without one, and the figure is left out. Standard library only, as
``bench.measure`` is.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

V1_ROOT = Path("/sys/fs/cgroup/memory")
V2_ROOT = Path("/sys/fs/cgroup")


class MemoryCgroup:
    """A fresh memory cgroup ``taskfleet-bench-<pid>-<n>``: processes enter it with ``enter`` (in the child before it
    execs), ``anon_mb`` reads its anonymous memory, ``remove`` deletes it once they are gone."""

    _made = 0

    def __init__(self, path: Path, anon_field: str) -> None:
        self.path = path
        self._anon_field = anon_field

    @classmethod
    def create(cls) -> MemoryCgroup | None:
        """A new cgroup under the first writable memory hierarchy, or None."""
        cls._made += 1
        name = f"taskfleet-bench-{os.getpid()}-{cls._made}"
        candidates = [(V1_ROOT, "total_rss")]
        with contextlib.suppress(OSError):
            if "memory" in (V2_ROOT / "cgroup.subtree_control").read_text().split():
                candidates.append((V2_ROOT, "anon"))
        for root, field in candidates:
            if not (root / "cgroup.procs").exists():
                continue
            try:
                (root / name).mkdir()
            except OSError:
                continue
            return cls(root / name, field)
        return None

    def enter(self) -> None:
        """Move the calling process into the cgroup (for ``subprocess.Popen``'s ``preexec_fn``: after the fork,
        before the exec, so everything the worker allocates is charged here)."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def anon_mb(self) -> float | None:
        """The cgroup's anonymous memory in MiB (None when unreadable)."""
        try:
            for line in (self.path / "memory.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == self._anon_field:
                    return round(int(value) / 2**20, 1)
        except (OSError, ValueError):
            return None
        return None

    def remove(self, timeout_s: float = 5.0) -> None:
        """Delete the cgroup once its processes have exited (waits up to ``timeout_s``; left behind after that)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.05)
