"""The README's quickstart works as written: its ``tasks.py``, its worker command and its shell commands, run with
the console script in a fresh folder, on the embedded SQLite broker the README's app names (no server)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.waiting import wait_for
from tests.support.workers import terminate

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
TASKFLEET = str(Path(sys.executable).with_name("taskfleet"))
COMMAND_TIMEOUT_S = 30.0


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)


def _quickstart_commands() -> list[str]:
    """The quickstart's shell lines that run a ``taskfleet`` command (comments dropped)."""
    lines = [line.split("  #")[0].strip() for block in _blocks("bash") for line in block.splitlines()]
    return [line for line in lines if line.startswith("taskfleet ")]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKFLEET_")}
    return {**env, "PATH": f"{Path(TASKFLEET).parent}:{env.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """A folder holding the README's ``tasks.py``, with the README's worker running in it."""
    tasks_py = next(block for block in _blocks("python") if "app = App(\"billing\"" in block)
    (tmp_path / "tasks.py").write_text(tasks_py.replace("    ...\n", ""), encoding="utf-8")
    worker_command = next(c for c in _quickstart_commands() if c.startswith("taskfleet worker"))
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(shlex.split(worker_command), cwd=tmp_path, env=_env(), stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: b"worker starting" in (tmp_path / "worker.log").read_bytes(), timeout=COMMAND_TIMEOUT_S,
                 message="the README's worker started")
        yield tmp_path
    finally:
        terminate(worker, COMMAND_TIMEOUT_S)
        log.close()


def test_the_quickstarts_shell_commands_work_as_written(project: Path) -> None:
    commands = {c.split()[1]: c for c in _quickstart_commands() if " -A tasks:app" in c}
    assert {"call", "queues", "dead-letters", "purge", "check", "workers", "inspect", "control", "revoke"} <= set(
        commands), commands

    def run(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(shlex.split(command), cwd=project, env=_env(), text=True, capture_output=True,
                              timeout=COMMAND_TIMEOUT_S, check=False)

    called = run(commands["call"])
    assert called.returncode == 0, called.stderr
    assert called.stdout.splitlines()[-1] == "3"
    for name in ("queues", "dead-letters", "check", "workers", "inspect", "control", "revoke"):
        result = run(commands[name])
        assert result.returncode == 0, f"{commands[name]}: {result.stderr}"
    purged = run(commands["purge"])  # no terminal to ask on: it refuses without --yes, and says so
    assert purged.returncode == 1
    assert "--yes" in purged.stderr
