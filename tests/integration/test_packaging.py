"""The wheel carries the folder mapping (sdk/ -> taskfleet, worker/ -> taskfleet.worker, ...) and its data files."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_the_wheel_installs_every_package_under_the_taskfleet_name(tmp_path: Path) -> None:
    # -P keeps the repo root off sys.path (its operator/ folder would shadow the stdlib module)
    subprocess.run([sys.executable, "-P", "-m", "build", "--wheel", "--outdir", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True, timeout=280)
    wheel = next(tmp_path.glob("taskfleet-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in ("taskfleet/__init__.py", "taskfleet/py.typed", "taskfleet/brokers/redis_fetch.lua",
                     "taskfleet/backends/redis.py", "taskfleet/worker/supervisor.py", "taskfleet/cli/__init__.py",
                     "taskfleet/operator/__init__.py"):
        assert expected in names, expected
    assert not any(n.startswith(("sdk/", "worker/", "tests/")) for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "taskfleet = taskfleet.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
