"""examples/05-kubernetes-autoscaling as far as a cluster without a kubelet allows: the API server accepts its
TaskQueue as written, the operator gives it a worker Deployment of the example image, and the example's send.py
makes a backlog that scales that Deployment from 0 to 5 within one poll, as the README says."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.k8s import ControlPlane
from tests.support.operator import OperatorProcess, events, get, wait_replicas
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "05-kubernetes-autoscaling"
MANIFEST = EXAMPLE / "taskqueue.yaml"
#: The Secret the manifest reads its broker URL from: the chart's dev Redis (release "taskfleet").
DEV_BROKERS_SECRET = "taskfleet-dev-brokers"
#: The example's pollIntervalSeconds, plus time for the operator to see the new TaskQueue and kubectl round trips.
SCALE_TIMEOUT_S = 5 + 10


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return loaded


def contains(served: Any, written: Any) -> bool:
    """Whether ``served`` has every field of ``written`` with its value (the API server may add defaults)."""
    if isinstance(written, dict):
        return isinstance(served, dict) and all(k in served and contains(served[k], v) for k, v in written.items())
    return bool(served == written)


def test_the_example_task_queue_is_accepted_by_the_api_server_as_written(crd: ControlPlane, namespace: str) -> None:
    # When the manifest is applied as the README says (server-side dry run: validated and defaulted, not stored)
    applied = crd.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(MANIFEST), "-o", "json")

    # Then the API server keeps every field (the CRD rejects unknown ones) and the example image is the one
    # deploy/examples/worker builds, as deploy/examples/taskqueue.yaml names it
    served = json.loads(applied.stdout)
    assert served["kind"] == "TaskQueue"
    assert served["metadata"]["name"] == "emails"
    assert contains(served["spec"], load(MANIFEST)["spec"]), served["spec"]
    short_version = load(ROOT / "deploy" / "examples" / "taskqueue.yaml")
    assert served["spec"]["worker"]["image"] == short_version["spec"]["worker"]["image"]
    assert get(crd, namespace, "taskqueue", "emails") is None, "a dry run stores nothing"


def test_the_example_send_py_backlog_scales_the_example_workers_from_zero_to_five(
        crd: ControlPlane, namespace: str, operator: OperatorProcess, redis_url: str) -> None:
    # Given the dev brokers' Secret (here pointing at a private Redis) and the example TaskQueue, idle at zero
    crd.kubectl("create", "secret", "generic", DEV_BROKERS_SECRET, "-n", namespace,
                f"--from-literal=redis-url={redis_url}")
    crd.kubectl("apply", "-n", namespace, "-f", str(MANIFEST))
    wait_for(lambda: get(crd, namespace, "deployment", "emails-worker"), 10, interval=0.1,
             message=f"no worker Deployment:\n{operator.log_text()[-2000:]}")
    deployment = get(crd, namespace, "deployment", "emails-worker")
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 0
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/taskfleet/examples:0.1.0"
    assert container["command"][:6] == ["taskfleet", "worker", "--app", "tasks:app", "--queues", "emails"]

    # When send.py sends its 200 tasks, as the README runs it
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKFLEET_")}
    sent = subprocess.run([sys.executable, "send.py"], cwd=EXAMPLE, env={**env, "TASKFLEET_BROKER_URL": redis_url},
                          capture_output=True, text=True, timeout=60, check=False)
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.strip() == "sent 200 x examples.send_email to queue emails"

    # Then the operator scales the workers to 200 / targetPerReplica 40 = 5 (maxReplicas) within a poll
    wait_replicas(crd, namespace, "emails-worker", 5, timeout=SCALE_TIMEOUT_S)
    messages = [e["message"] for e in events(crd, namespace, "Scaled")]
    # (from 0, or from 1 when a poll fell inside the burst)
    assert any(re.match(r"scaled from [01] to 5: ready=200 ", m) for m in messages), messages
