"""A real one-node Kubernetes cluster for the realnode tier: tests/k8s/real-node.sh run from Python, with kubectl,
helm and waits against it, and the brokers worker pods reach.

Pods reach the node's processes at the pod bridge's gateway, ``POD_GATEWAY`` (10.244.0.1): brokers started here
listen on 127.0.0.1 for the test and on that address for pods. Everything runs inside tests/k8s/netns-run.sh, whose
private network namespace keeps the node's fixed ports, bridge and iptables rules off the host.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.support.k8s import KubectlError, _alarm_paused
from tests.support.rabbitmq_server import RabbitMQServer
from tests.support.servers import RedisServer, ServerUnavailable

REPO = Path(__file__).resolve().parents[2]
K8S_SCRIPTS = REPO / "tests" / "k8s"
CHART = REPO / "charts" / "taskfleet"
#: Where pods reach the node (the CNI bridge's gateway; CoreDNS listens there too).
POD_GATEWAY = "10.244.0.1"
#: The images tests/k8s/build-images.sh builds and real-node.sh imports (pods use them with pullPolicy Never).
TASKFLEET_IMAGE = "localhost/taskfleet:local"
EXAMPLE_WORKER_IMAGE = "localhost/taskfleet-worker-example:local"
#: tests/realnode/tasks.py on top of the Taskfleet image: ``app: tasks:app`` in a TaskQueue.
TEST_WORKER_IMAGE = "localhost/taskfleet-worker-test:local"
ARCHIVES = ("images",)  # pause.tar is real-node.sh's own
#: Set (by netns-run.sh) when we run inside a private network namespace; real-node.sh refuses to run without it.
NETNS_ENV = "TASKFLEET_NETNS_PID"
#: A run directory of a cluster already up (``real-node.sh up`` prints it): use it, and leave it up afterwards.
RUN_DIR_ENV = "TASKFLEET_REALNODE_DIR"
BUILD_TIMEOUT_S = 1800.0  # cold: Go build of the node binaries ~4-8 min, images ~2-3 min, on 2 cores
UP_TIMEOUT_S = 300.0  # measured 15-25 s
DOWN_TIMEOUT_S = 120.0  # measured ~5-20 s
KUBECTL_TIMEOUT_S = 120.0
HELM_TIMEOUT_S = 300.0


def _script(*args: str, timeout: float) -> str:
    """Run a tests/k8s script and return its last line of stdout ("" when it prints none); ServerUnavailable (with
    its stderr) on failure."""
    try:
        result = subprocess.run(["bash", *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServerUnavailable(f"{' '.join(args)} failed: {exc}") from exc
    if result.returncode != 0:
        raise ServerUnavailable(f"{' '.join(args)} exited with {result.returncode}: {result.stderr.strip()[-3000:]}")
    lines = result.stdout.strip().splitlines()
    return lines[-1] if lines else ""


class RealNode:
    """One real-node cluster: ``start()`` builds what is missing (a no-op when cached: inside the network namespace
    nothing can be downloaded) and runs ``real-node.sh up``; ``close()`` runs ``down``. With ``$TASKFLEET_REALNODE_DIR``
    it uses that running cluster and leaves it up."""

    def __init__(self) -> None:
        self.run_dir: Path | None = None
        self.bin_dir = Path()
        self.owned = False
        self.up_seconds = 0.0
        self._home = tempfile.TemporaryDirectory(prefix="tf-realnode-helm-")

    @property
    def kubeconfig(self) -> Path:
        assert self.run_dir is not None, "the cluster is not started"
        return self.run_dir / "admin.kubeconfig"

    def start(self) -> RealNode:
        """Find or build the binaries and images, then bring the node up. pytest-timeout's per-test alarm is paused
        meanwhile: a cold build is a cost of the machine, not of the first test."""
        with _alarm_paused():
            return self._start()

    def _start(self) -> RealNode:
        existing = os.environ.get(RUN_DIR_ENV)
        if existing:
            self.run_dir = Path(existing)
            self.bin_dir = Path((self.run_dir / "bin").read_text().strip())
            return self
        if not os.environ.get(NETNS_ENV):
            raise ServerUnavailable(
                "the realnode tier runs inside tests/k8s/netns-run.sh (`make realnode`), which keeps the node's "
                "ports, bridge and iptables rules off the host")
        self.bin_dir = Path(_script(str(K8S_SCRIPTS / "build-testbin.sh"), "--node", timeout=BUILD_TIMEOUT_S))
        archives = Path(_script(str(K8S_SCRIPTS / "build-images.sh"), timeout=BUILD_TIMEOUT_S))
        started = time.monotonic()
        run_dir = _script(str(K8S_SCRIPTS / "real-node.sh"), "up", *(str(archives / f"{n}.tar") for n in ARCHIVES),
                          timeout=UP_TIMEOUT_S)
        self.up_seconds = time.monotonic() - started
        self.run_dir, self.owned = Path(run_dir), True
        return self

    def close(self) -> None:
        """Tear the cluster down when this object started it (its pods, processes, cgroups and state directory)."""
        try:
            if self.owned and self.run_dir is not None:
                _script(str(K8S_SCRIPTS / "real-node.sh"), "down", str(self.run_dir), timeout=DOWN_TIMEOUT_S)
        finally:
            self.owned = False
            self._home.cleanup()

    def env(self) -> dict[str, str]:
        """``os.environ`` for kubectl, helm or the SDK against this cluster: ``KUBECONFIG`` set, binaries on PATH."""
        home = Path(self._home.name)
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": os.pathsep.join([str(self.bin_dir), os.environ.get("PATH", os.defpath)]),
            "HELM_CONFIG_HOME": str(home / "config"), "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_DATA_HOME": str(home / "data"), "KUBECACHEDIR": str(home / "kube-cache"),
        }

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = KUBECTL_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        """Run kubectl against the cluster; KubectlError (with its stderr) on a non-zero exit when ``check``."""
        command = [str(self.bin_dir / "kubectl"), *args]
        result = subprocess.run(command, input=input, capture_output=True, text=True, env=self.env(),
                                timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, command, result.stdout, result.stderr)
        return result

    def helm(self, *args: str, check: bool = True, timeout: float = HELM_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        """Run helm against the cluster (a private helm home); KubectlError (with its stderr) when it fails."""
        command = [str(self.bin_dir / "helm"), *args]
        result = subprocess.run(command, capture_output=True, text=True, env=self.env(), timeout=timeout,
                                check=False)
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, command, result.stdout, result.stderr)
        return result

    def apply(self, manifest: Mapping[str, Any] | str, namespace: str | None = None) -> None:
        """``kubectl apply`` one object (a mapping, sent as JSON) or YAML text."""
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        self.kubectl(*(["-n", namespace] if namespace else []), "apply", "-f", "-", input=text)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The object as a dict, or None when it does not exist."""
        result = self.kubectl(*(["-n", namespace] if namespace else []), "get", kind, name, "-o", "json",
                              check=False)
        if result.returncode != 0:
            if "NotFound" in result.stderr:
                return None
            raise KubectlError(result.returncode, ["kubectl", "get", kind, name], result.stdout, result.stderr)
        found: dict[str, Any] = json.loads(result.stdout)
        return found

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """The pods matching a label selector (``app.kubernetes.io/instance=emails``), as dicts."""
        items: list[dict[str, Any]] = json.loads(
            self.kubectl("-n", namespace, "get", "pods", "-l", selector, "-o", "json").stdout)["items"]
        return items

    def wait_until(self, what: str, probe: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
        """Call ``probe`` until it returns something truthy and return that; AssertionError naming ``what`` (and the
        last value seen) after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        value = probe()
        while not value:
            if time.monotonic() >= deadline:
                raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {value!r})")
            time.sleep(interval)
            value = probe()
        return value

    def replicas(self, namespace: str, deployment: str) -> tuple[int, int]:
        """(spec.replicas, status.readyReplicas) of a Deployment; (-1, -1) when it does not exist."""
        found = self.get("deployment", deployment, namespace)
        if found is None:
            return -1, -1
        return int(found["spec"].get("replicas", 0)), int(found.get("status", {}).get("readyReplicas", 0))

    def create_namespace(self, prefix: str) -> str:
        """A new namespace ``<prefix>-<hex>``; the ``namespace`` fixture deletes it after the test."""
        name = f"{prefix}-{os.urandom(3).hex()}"
        self.kubectl("create", "namespace", name)
        return name

    def logs(self, namespace: str, selector: str, tail: int = 50) -> str:
        """The last lines of every container matching ``selector`` (for failure messages)."""
        return self.kubectl("-n", namespace, "logs", "-l", selector, "--all-containers", "--prefix",
                            f"--tail={tail}", check=False).stdout


class PodRedis(RedisServer):
    """A private redis-server that pods reach too: bound to 127.0.0.1 (``url``) and the pod gateway (``pod_url``)."""

    def __init__(self) -> None:
        super().__init__(bind=("127.0.0.1", POD_GATEWAY))

    @property
    def pod_url(self) -> str:
        return f"redis://{POD_GATEWAY}:{self.port}"


class PodRabbitMQ(RabbitMQServer):
    """A private RabbitMQ node whose AMQP listener also takes the pod gateway (``pod_vhost_url``), and whose
    management API pods reach too (``pod_management_url``)."""

    def _write_config(self) -> None:
        super()._write_config()
        path = self.dir / "rabbitmq.conf"
        # The management API on every address of the namespace (it takes one): the operator's pod reads queue
        # depths there, which is how it knows a RabbitMQ queue is idle and may scale to zero.
        config = path.read_text().replace("management.tcp.ip = 127.0.0.1", "management.tcp.ip = 0.0.0.0")
        path.write_text(config + f"listeners.tcp.pods = {POD_GATEWAY}:{self.port}\n")

    @property
    def pod_management_url(self) -> str:
        """The management API's base URL with credentials, as pods reach it."""
        return self.management_url.replace("@127.0.0.1:", f"@{POD_GATEWAY}:")

    def pod_vhost_url(self, vhost: str) -> str:
        """The AMQP URL of ``vhost`` as pods reach it."""
        return self.vhost_url(vhost).replace("@127.0.0.1:", f"@{POD_GATEWAY}:")


def taskqueue(name: str, *, queues: Sequence[str], broker_secret: str, management_key: str | None = None,
              image: str = TEST_WORKER_IMAGE,
              app: str = "tasks:app", concurrency: int = 1, min_replicas: int = 0, max_replicas: int = 3,
              target_per_replica: int = 5, poll_interval_s: int = 1, stabilization_s: int = 5,
              drain_timeout_s: int = 10) -> dict[str, Any]:
    """A TaskQueue manifest for the test worker image, small enough for a 2-core node (10m CPU, 64Mi requested).
    The broker URL comes from Secret ``broker_secret`` (key ``url``), and on RabbitMQ the management API's from its
    ``management_key`` (without it the operator never scales a RabbitMQ queue to zero)."""
    broker: dict[str, Any] = {"urlFrom": {"secretKeyRef": {"name": broker_secret, "key": "url"}}}
    if management_key:
        broker["managementUrlFrom"] = {"secretKeyRef": {"name": broker_secret, "key": management_key}}
    return {
        "apiVersion": "taskfleet.io/v1alpha1", "kind": "TaskQueue", "metadata": {"name": name},
        "spec": {
            "queues": list(queues),
            "broker": broker,
            "worker": {
                "image": image, "imagePullPolicy": "Never", "app": app, "concurrency": concurrency,
                "drainTimeoutSeconds": drain_timeout_s,
                "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
            },
            "autoscaling": {
                "minReplicas": min_replicas, "maxReplicas": max_replicas, "targetPerReplica": target_per_replica,
                "pollIntervalSeconds": poll_interval_s,
                "scaleDown": {"stabilizationSeconds": stabilization_s, "maxStep": max_replicas},
            },
        },
    }
