"""The scripts of the Kubernetes test tiers (tests/k8s/): they parse, and refuse what they do not know, without
building or starting anything (the realnode tier runs them for real)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "tests" / "k8s"


@pytest.mark.parametrize("script", sorted(p.name for p in SCRIPTS.glob("*.sh")))
def test_every_script_parses(script: str) -> None:
    result = subprocess.run(["bash", "-n", str(SCRIPTS / script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("script", "args"), [
    ("build-testbin.sh", ["--nodes"]),
    ("real-node.sh", ["sideways"]),
])
def test_an_unknown_command_or_option_is_refused_with_its_usage(script: str, args: list[str]) -> None:
    env = {**os.environ, "TASKFLEET_K8S_CACHE": "/nonexistent/cache"}
    result = subprocess.run(["bash", str(SCRIPTS / script), *args], capture_output=True, text=True, env=env,
                            check=False)
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_real_node_refuses_to_start_outside_a_private_network_namespace() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("TASKFLEET_NETNS_PID", "REALNODE_ON_HOST")}
    result = subprocess.run(["bash", str(SCRIPTS / "real-node.sh"), "up"], capture_output=True, text=True, env=env,
                            check=False)
    assert result.returncode == 2
    assert "netns-run.sh" in result.stderr
