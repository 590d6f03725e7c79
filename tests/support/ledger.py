"""A run ledger that does not depend on the broker: processes append one short line per event to a file with
``O_APPEND`` (one ``write`` of less than ``PIPE_BUF`` bytes, so lines from many processes never interleave), and the
test reads it back.

The chaos tasks (tests/chaos/tasks.py) write ``S`` when a run starts, ``E`` when its body ends, and ``R`` when the
worker has stored a final state for it in the result backend. Times are ``time.monotonic()``, one clock for every
process of the machine, so they compare with the fault injector's timestamps.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

#: Event kinds.
START, END, STORED = "S", "E", "R"


def append(path: str | Path, *fields: object) -> None:
    """Append one line of space-separated ``fields`` atomically (one ``write`` on an ``O_APPEND`` descriptor)."""
    line = (" ".join(str(f) for f in fields) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@dataclass
class Run:
    """One execution of one attempt of a task, in one process."""

    task_id: str
    attempt: int
    kind: str
    pid: int
    ppid: int  # the worker's supervisor
    start: float
    delivery_count: int
    end: float | None = None
    stored: float | None = None  # when this process stored a final state for it (result-keeping tasks)

    @property
    def key(self) -> tuple[str, int]:
        return self.task_id, self.attempt


@dataclass
class Ledger:
    """Everything the ledger file says: runs by (task id, attempt), and final-state stores."""

    runs: dict[tuple[str, int], list[Run]] = field(default_factory=lambda: defaultdict(list))
    #: (task id, attempt) -> [(time, pid, state)] of final states stored
    stores: dict[tuple[str, int], list[tuple[float, int, str]]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def read(cls, path: str | Path) -> Ledger:
        ledger = cls()
        p = Path(path)
        if not p.exists():
            return ledger
        for line in p.read_text(encoding="utf-8").splitlines():
            parts = line.split()
            if not parts:
                continue
            if parts[0] == START:
                _, task_id, attempt, kind, pid, ppid, t, count = parts
                ledger.runs[(task_id, int(attempt))].append(
                    Run(task_id, int(attempt), kind, int(pid), int(ppid), float(t), int(count)))
            elif parts[0] == END:
                _, task_id, attempt, pid, t = parts
                run = ledger._open_run((task_id, int(attempt)), int(pid), lambda r: r.end is None)
                if run is not None:
                    run.end = float(t)
            elif parts[0] == STORED:
                _, task_id, attempt, pid, t, state = parts
                key = (task_id, int(attempt))
                ledger.stores[key].append((float(t), int(pid), state))
                run = ledger._open_run(key, int(pid), lambda r: r.stored is None)
                if run is not None:
                    run.stored = float(t)
        for runs in ledger.runs.values():
            runs.sort(key=lambda r: r.start)
        return ledger

    def _open_run(self, key: tuple[str, int], pid: int, pending: object) -> Run | None:
        matches = [r for r in self.runs.get(key, []) if r.pid == pid and pending(r)]  # type: ignore[operator]
        return max(matches, key=lambda r: r.start) if matches else None

    def all_runs(self) -> list[Run]:
        return [r for runs in self.runs.values() for r in runs]

    def running_in(self, pid: int) -> Run | None:
        """The run in progress in process ``pid`` (started, body not ended), if any."""
        found = [r for r in self.all_runs() if r.pid == pid and r.end is None]
        return max(found, key=lambda r: r.start) if found else None
