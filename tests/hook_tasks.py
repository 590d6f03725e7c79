"""Tasks with hooks and progress updates, registered on the test app of tests/tasks.py: a worker started with
``-A tests.hook_tasks:app`` runs these and those. Tasks that tests observe from outside write lines to a file named
in their first argument.

``TASKFLEET_TEST_PROCESS_FILE``, when set in a worker's environment, names a file each of its children appends
``init <pid>`` to (``worker_process_init``) and ``shutdown <pid>`` (``worker_process_shutdown``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from taskfleet import Task, signals
from taskfleet.hooks import ExceptionInfo
from tests.tasks import _note, app

__all__ = ["app"]

PROCESS_FILE_ENV = "TASKFLEET_TEST_PROCESS_FILE"


class Recorder(Task[Any]):
    """Writes one line per hook to the file named by the task's first argument."""

    def before_start(self, task_id: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        _note(args[0], f"before_start {task_id}")

    def on_success(self, retval: Any, task_id: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        _note(args[0], f"on_success {retval}")

    def on_failure(self, exc: BaseException, task_id: str, args: tuple[Any, ...], kwargs: Mapping[str, Any],
                   einfo: ExceptionInfo) -> None:
        _note(args[0], f"on_failure {type(exc).__name__} {einfo.type.__name__} {'Traceback' in einfo.traceback}")

    def on_retry(self, exc: BaseException | None, task_id: str, args: tuple[Any, ...], kwargs: Mapping[str, Any],
                 einfo: ExceptionInfo) -> None:
        _note(args[0], f"on_retry {type(exc).__name__} {einfo.type.__name__}")

    def after_return(self, status: str, retval: Any, task_id: str, args: tuple[Any, ...], kwargs: Mapping[str, Any],
                     einfo: ExceptionInfo | None) -> None:
        _note(args[0], f"after_return {status} {einfo is not None}")


class Broken(Task[Any]):
    """Every hook raises."""

    def before_start(self, task_id: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        raise RuntimeError("before_start is broken")

    def on_success(self, retval: Any, task_id: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        raise RuntimeError("on_success is broken")

    def on_failure(self, exc: BaseException, task_id: str, args: tuple[Any, ...], kwargs: Mapping[str, Any],
                   einfo: ExceptionInfo) -> None:
        raise RuntimeError("on_failure is broken")

    def on_retry(self, exc: BaseException | None, task_id: str, args: tuple[Any, ...], kwargs: Mapping[str, Any],
                 einfo: ExceptionInfo) -> None:
        raise RuntimeError("on_retry is broken")

    def after_return(self, status: str, retval: Any, task_id: str, args: tuple[Any, ...], kwargs: Mapping[str, Any],
                     einfo: ExceptionInfo | None) -> None:
        raise RuntimeError("after_return is broken")


@app.task(base=Recorder)
def hooked_add(path: str, x: int, y: int) -> int:
    _note(path, "body")
    return x + y


@app.task(base=Recorder)
def hooked_fail(path: str, message: str) -> None:
    raise ValueError(message)


@app.task(base=Recorder, bind=True, max_retries=1)
def hooked_flaky(self: Task[str], path: str) -> str:
    """Asks for a quick retry on its first attempt and succeeds on the second."""
    if self.request.retries == 0:
        self.retry(countdown=0.1, exc=OSError("flake"))
    return "ok"


@app.task(base=Recorder, autoretry_for=(OSError,), max_retries=0)
def hooked_no_retries_left(path: str) -> None:
    raise OSError("disk on fire")


@app.task(base=Broken)
def broken_hooks_add(path: str, x: int, y: int) -> int:
    _note(path, "body")
    return x + y


@app.task(base=Broken, bind=True, max_retries=1)
def broken_hooks_flaky(self: Task[str], path: str) -> str:
    _note(path, f"attempt {self.request.retries}")
    if self.request.retries == 0:
        self.retry(countdown=0.1)
    return "ok"


@app.task(base=Broken)
def broken_hooks_fail(path: str) -> None:
    _note(path, "body")
    raise ValueError("the task's own failure")


@app.task(bind=True)
def report_progress(self: Task[str], gate: str, steps: int) -> str:
    """Store WAITING, wait (up to 10 s) for the file ``gate`` to exist, then store PROGRESS ``steps`` times with
    ``{"done": i, "total": steps}``; returns ``"done"``. A caller creates ``gate`` once it sees WAITING, so it is
    listening before the first PROGRESS."""
    self.update_state(state="WAITING")
    deadline = time.monotonic() + 10
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    for done in range(1, steps + 1):
        self.update_state(state="PROGRESS", meta={"done": done, "total": steps})
    return "done"


@app.task(bind=True, ignore_result=True)
def progress_ignored(self: Task[None], path: str) -> None:
    self.update_state(state="PROGRESS", meta={"done": 1})
    _note(path, "ran")


def _process_file() -> str | None:
    return os.environ.get(PROCESS_FILE_ENV)


@signals.worker_process_init.connect
def _note_process_init(sender: Any = None, **kwargs: Any) -> None:
    path = _process_file()
    if path:
        _note(path, f"init {os.getpid()}")


@signals.worker_process_shutdown.connect
def _note_process_shutdown(sender: Any = None, pid: int = 0, exitcode: int = -1, **kwargs: Any) -> None:
    path = _process_file()
    if path:
        _note(path, f"shutdown {pid} {exitcode}")


def process_lines(path: str | Path) -> list[str]:
    """What the worker children wrote to ``path``."""
    p = Path(path)
    return p.read_text(encoding="utf-8").splitlines() if p.exists() else []
