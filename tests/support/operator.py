"""The operator as a real subprocess (``python -m taskfleet operator``) against the test control plane, and small
helpers to write TaskQueues and read what the operator did, through the real kubectl."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.support.k8s import ControlPlane
from tests.support.servers import free_port
from tests.support.waiting import wait_for
from tests.support.workers import terminate

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "deploy" / "crds" / "taskqueue.yaml"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


class OperatorProcess:
    """``taskfleet <args>`` (default ``operator --all-namespaces``) with its log in a temp file, on free local ports.

    ``args`` may be the operator container's arguments from the chart's Deployment and ``kubeconfig`` a
    ServiceAccount's credentials: the chart's command line then runs with the chart's RBAC. Flags given later win
    with argparse, so the ports, host and log settings appended here replace the chart's."""

    def __init__(self, kube: ControlPlane, args: Sequence[str] = ("operator", "--all-namespaces"),
                 kubeconfig: Path | None = None) -> None:
        self.liveness_port = free_port()
        self.metrics_port = free_port()
        self.log_path = Path(tempfile.mkstemp(prefix="taskfleet-operator-", suffix=".log")[1])
        self._log = self.log_path.open("wb")
        #: False when it serves only some namespaces: those tests may still use (the e2e ``namespace`` fixture).
        self.watches_all = True
        self.free_namespaces: list[str] = []
        cmd = [sys.executable, "-m", "taskfleet", *args, "--host", "127.0.0.1",
               "--liveness-port", str(self.liveness_port), "--metrics-port", str(self.metrics_port),
               "--log-format", "json", "-l", "debug"]
        env = {**kube.env(), "PYTHONUNBUFFERED": "1"}
        if kubeconfig is not None:
            env["KUBECONFIG"] = str(kubeconfig)
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=REPO)

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self) -> OperatorProcess:
        wait_for(lambda: self.proc.poll() is not None or self._live(), START_TIMEOUT_S, interval=0.2,
                 message=f"the operator did not become live:\n{self.log_text()[-3000:]}")
        assert self.proc.poll() is None, f"the operator exited ({self.proc.returncode}):\n{self.log_text()[-3000:]}"
        return self

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return str(response.read().decode())

    def stop(self) -> None:
        terminate(self.proc, STOP_TIMEOUT_S)
        self._log.close()

    def _live(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False


def task_queue(name: str, *, queues: list[str], secret: str = "broker", management: bool = False,
               image: str = "ghcr.io/taskfleet/worker:test", **spec: Any) -> dict[str, Any]:
    """A TaskQueue manifest whose broker URL comes from Secret ``secret`` (key ``url``; ``management-url`` with
    ``management``). ``spec`` keys are merged in (``autoscaling={...}``, ``worker={...}`` update the defaults)."""
    broker: dict[str, Any] = {"urlFrom": {"secretKeyRef": {"name": secret, "key": "url"}}}
    if management:
        broker["managementUrlFrom"] = {"secretKeyRef": {"name": secret, "key": "management-url"}}
    body: dict[str, Any] = {
        "apiVersion": "taskfleet.io/v1alpha1", "kind": "TaskQueue", "metadata": {"name": name},
        "spec": {"queues": queues, "broker": broker, "worker": {"image": image, "app": "tests.tasks:app"}},
    }
    for key, value in spec.items():
        if isinstance(value, dict) and isinstance(body["spec"].get(key), dict):
            body["spec"][key] = {**body["spec"][key], **value}
        else:
            body["spec"][key] = value
    return body


def apply(kube: ControlPlane, namespace: str, manifest: dict[str, Any], *, check: bool = True
          ) -> subprocess.CompletedProcess[str]:
    return kube.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest), check=check)


def create_broker_secret(kube: ControlPlane, namespace: str, url: str, management_url: str | None = None,
                         name: str = "broker") -> None:
    literals = [f"--from-literal=url={url}"]
    if management_url:
        literals.append(f"--from-literal=management-url={management_url}")
    kube.kubectl("create", "secret", "generic", name, "-n", namespace, *literals)


def get(kube: ControlPlane, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    """The object as JSON, or None when it does not exist."""
    done = kube.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if done.returncode != 0:
        assert "NotFound" in done.stderr, done.stderr
        return None
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def replicas(kube: ControlPlane, namespace: str, deployment: str) -> int | None:
    obj = get(kube, namespace, "deployment", deployment)
    return None if obj is None else int(obj["spec"].get("replicas", 0))


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def events(kube: ControlPlane, namespace: str, reason: str | None = None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(kube.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)[
        "items"]
    return [e for e in items if reason is None or e.get("reason") == reason]


def wait_replicas(kube: ControlPlane, namespace: str, deployment: str, want: int, timeout: float) -> float:
    """Wait until the Deployment asks for ``want`` replicas; returns when that was first seen (monotonic)."""
    wait_for(lambda: replicas(kube, namespace, deployment) == want, timeout, interval=0.1,
             message=f"{deployment}: replicas never became {want} (now {replicas(kube, namespace, deployment)})")
    return time.monotonic()
