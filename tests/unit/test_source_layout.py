"""The repository root is safe on ``sys.path``: no folder there shadows a standard-library module.

The top-level folders ``sdk/``, ``worker/``, ``operator/`` and ``cli/`` are source roots, not packages: a root-level
``operator/__init__.py`` would replace the stdlib ``operator`` for any interpreter started with the root first on
its path (``PYTHONPATH=.``, or an empty entry such as ``PYTHONPATH=/x:``), and every ``taskfleet`` command would die
at start-up.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.layout import REPO, SOURCE_ROOTS

TAKES_S = 60


def _env(pythonpath: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKFLEET_")}
    return {**env, "PYTHONPATH": pythonpath}


@pytest.mark.parametrize("pythonpath", [str(REPO), ".", "/nonexistent:"], ids=["root", "dot", "empty-entry"])
def test_taskfleet_starts_with_the_repository_root_first_on_the_path(pythonpath: str) -> None:
    # Given the repository root first on sys.path (the working directory is the root)
    taskfleet = shutil.which("taskfleet", path=str(Path(sys.executable).parent))
    assert taskfleet is not None, "the taskfleet command is installed beside this interpreter"

    # When the command starts
    done = subprocess.run([taskfleet, "--version"], cwd=REPO, env=_env(pythonpath), capture_output=True, text=True,
                          timeout=TAKES_S, check=False)

    # Then it prints its version
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("taskfleet "), done.stdout


def test_the_standard_library_operator_wins_with_the_root_on_the_path() -> None:
    done = subprocess.run([sys.executable, "-c", "import operator, taskfleet.operator; print(operator.eq(1, 1))"],
                          cwd=REPO, env=_env(str(REPO)), capture_output=True, text=True, timeout=TAKES_S, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"


@pytest.mark.parametrize("root", SOURCE_ROOTS)
def test_no_top_level_source_folder_is_itself_a_package(root: str) -> None:
    assert not (REPO / root / "__init__.py").exists()
    assert not list((REPO / root).glob("*.py")), f"{root}/ holds only its taskfleet/ folder"
