"""Faults injected into real worker processes and broker servers, each recorded with its time
(``time.monotonic()``, the ledger's clock) and the pids it hit, so a test can tell which runs a fault explains."""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.workers import children_of

#: Fault kinds.
KILL_CHILD = "kill_child"  # SIGKILL of one child mid-task
KILL_WORKER = "kill_worker"  # SIGKILL of a supervisor and all its children
SIGSTOP = "sigstop"  # SIGSTOP of a child past its lease, then SIGCONT
BROKER_RESTART = "broker_restart"  # the broker server stopped and started again
DRAIN = "drain"  # SIGTERM of a worker: it must finish running tasks, give the rest back and exit 0
POISON = "poison"  # poison messages published
#: Not injected: a poison task SIGKILLed its own child (found in the ledger). It hits that child's other runs as
#: KILL_CHILD does: an ignore_result task finished just before it has its ack still pending.
POISON_KILL = "poison_kill"


@dataclass
class Fault:
    kind: str
    begin: float
    end: float
    pids: frozenset[int] = frozenset()
    note: str = ""


@dataclass
class FaultLog:
    """Thread-safe list of the faults injected in one run."""

    faults: list[Fault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def of(self, *kinds: str) -> list[Fault]:
        with self._lock:
            return [f for f in self.faults if f.kind in kinds]


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (gone, or a zombie nobody reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


def kill(pid: int, signum: int = signal.SIGKILL) -> bool:
    """Send ``signum`` to ``pid``; False when it is already gone."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


def kill_tree(pid: int) -> frozenset[int]:
    """SIGKILL a supervisor and its children at once; returns the pids. The supervisor is stopped first: a supervisor
    that saw a child die before its own SIGKILL would fork a replacement that no list names, and that orphan could
    start a task before its orphan check ends it."""
    if kill(pid, signal.SIGSTOP):
        deadline = time.monotonic() + 2.0  # kill() returns before the signal is taken: wait until it has stopped
        while not _stopped(pid) and time.monotonic() < deadline:
            time.sleep(0.001)
    children = children_of(pid)
    for child in children:
        kill(child)
    kill(pid)
    return frozenset({pid, *children})


def _stopped(pid: int) -> bool:
    """True when ``pid`` is stopped by a signal, or gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] in ("T", "Z", "X")


def now() -> float:
    return time.monotonic()
