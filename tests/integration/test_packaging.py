"""The wheel carries every package of the four source roots (sdk/taskfleet -> taskfleet, worker/taskfleet/worker ->
taskfleet.worker, ...) and its data files."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_the_wheel_installs_every_package_under_the_taskfleet_name(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True, timeout=280)
    wheel = next(tmp_path.glob("taskfleet-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in ("taskfleet/__init__.py", "taskfleet/py.typed", "taskfleet/brokers/redis/lua/fetch.lua",
                     "taskfleet/backends/redis.py", "taskfleet/worker/supervisor.py", "taskfleet/cli/__init__.py",
                     "taskfleet/operator/__init__.py"):
        assert expected in names, expected
    assert not any(n.startswith(("sdk/", "worker/", "tests/")) for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "taskfleet = taskfleet.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_every_package_in_the_source_roots_is_in_the_wheel_and_nothing_else_is() -> None:
    from tests.support.layout import SOURCE_ROOTS, packages_listed, packages_on_disk

    assert packages_listed() == packages_on_disk(), (
        f"[tool.setuptools] packages in pyproject.toml must list every folder with an __init__.py under "
        f"{', '.join(SOURCE_ROOTS)}"
    )
