"""Run ``taskfleet worker`` as a real subprocess (supervisor + forked children) for integration tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.support.servers import free_port
from tests.support.waiting import wait_for

STOP_TIMEOUT_S = 30.0


class WorkerProcess:
    """One ``taskfleet worker`` process tree. Its JSON log lines are kept in a file for assertions."""

    def __init__(self, *, broker: str, backend: str | None, app: str = "tests.tasks:app",
                 queues: str = "tests", concurrency: int = 2, extra: list[str] | None = None,
                 wrapper: Sequence[str] = ()) -> None:
        """``wrapper`` prefixes the command line (e.g. ``unshare --pid --fork`` to run the worker as PID 1)."""
        self.health_port = free_port()
        self.log_path = Path(tempfile.mkstemp(prefix="taskfleet-worker-", suffix=".log")[1])
        cmd = [*wrapper, sys.executable, "-m", "taskfleet", "worker", "-A", app, "-Q", queues, "-c", str(concurrency),
               "--broker", broker, "--log-format", "json", "-l", "debug", "--health-host", "127.0.0.1",
               "--health-port", str(self.health_port), "--drain-timeout", "10", *(extra or [])]
        if backend:
            cmd += ["--result-backend", backend]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("TASKFLEET_BROKER_URL", None)
        env.pop("TASKFLEET_RESULT_BACKEND", None)
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     cwd=Path(__file__).resolve().parents[2])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def logs(self) -> list[dict[str, Any]]:
        """Parsed JSON log lines so far (non-JSON lines are kept as {"raw": line})."""
        return json_lines(self.log_path)

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_started(self, timeout: float = 15.0) -> WorkerProcess:
        wait_for(lambda: self.proc.poll() is not None or "worker starting" in self.log_text(), timeout,
                 message="worker did not start")
        assert self.proc.poll() is None, f"worker exited early ({self.proc.returncode}):\n{self.log_text()}"
        return self

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float = STOP_TIMEOUT_S) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        terminate(self.proc, STOP_TIMEOUT_S)
        self._log.close()


def json_lines(path: Path, *, raw_key: str = "raw") -> list[dict[str, Any]]:
    """The JSON log lines of ``path``, parsed; a line that is not JSON is kept as ``{raw_key: line}``."""
    out: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            out.append({raw_key: line})
    return out


class LoggedWorkers:
    """Worker commands a test starts in a folder, each logging to its own file there: ``start`` waits until the
    worker says it started (failing with its log if it exited); ``stop_all`` SIGTERMs them and prints each log's
    tail (shown when the test fails)."""

    def __init__(self, folder: Path, *, start_timeout_s: float, stop_timeout_s: float = STOP_TIMEOUT_S) -> None:
        self.folder = folder
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, command: Sequence[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = self.folder / f"worker-{len(self.started) + 1}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(list(command), cwd=self.folder, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.started.append((proc, log))
        wait_for(lambda: proc.poll() is not None or "worker starting" in log.read_text(errors="replace"),
                 self.start_timeout_s, message="the worker did not start")
        assert proc.poll() is None, f"the worker exited:\n{log.read_text(errors='replace')}"
        return proc

    def stop_all(self) -> None:
        for proc, log in self.started:
            terminate(proc, self.stop_timeout_s)
            print(f"--- {log.name} (exit code {proc.returncode}):\n{log.read_text(errors='replace')[-3000:]}")


def terminate(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM ``proc``, then SIGKILL it if it has not exited within ``timeout_s``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def children_of(pid: int) -> list[int]:
    """PIDs of the direct children of ``pid`` (Linux /proc)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def wait_children(pid: int, count: int, timeout: float = 10.0) -> list[int]:
    wait_for(lambda: len(children_of(pid)) >= count, timeout, message=f"{count} children of {pid}")
    time.sleep(0.2)  # let them connect
    return children_of(pid)
