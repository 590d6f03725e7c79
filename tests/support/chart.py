"""The Helm chart under test: the real helm binary (built with the control plane's binaries), installs into the
envtest API server, and credentials of the chart's own ServiceAccount, so the operator runs with exactly the RBAC
the chart grants instead of admin rights."""

from __future__ import annotations

import base64
import json
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.support.k8s import CLUSTER, ControlPlane, k8s_bin_dir

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "taskfleet"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
#: The plain manifests for people without Helm, rendered from the chart (`make manifests`).
MANIFESTS = REPO / "deploy" / "manifests" / "taskfleet.yaml"
#: How deploy/manifests/taskfleet.yaml is rendered; the Makefile's `manifests` target runs the same command.
MANIFESTS_RELEASE = "taskfleet"
MANIFESTS_NAMESPACE = "taskfleet"
HELM_TIMEOUT_S = 120.0
#: Lifetime of the ServiceAccount tokens tests mint: longer than any test session.
TOKEN_DURATION = "4h"


class HelmError(subprocess.CalledProcessError):
    """helm exited non-zero; str() carries its stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{str(self.stderr).strip()[-3000:]}"


class Helm:
    """The real helm, with its config, cache and data in a private directory (nothing touches ``~``). With a
    ``kube``, helm talks to that control plane; without one, only offline commands (lint, template) work."""

    def __init__(self, kube: ControlPlane | None = None) -> None:
        self.kube = kube
        self.binary = (kube.bin_dir if kube is not None else k8s_bin_dir()) / "helm"
        self._home = tempfile.TemporaryDirectory(prefix="tf-helm-")

    def close(self) -> None:
        self._home.cleanup()

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        home = Path(self._home.name)
        env = {
            **(self.kube.env() if self.kube is not None else {"PATH": "/usr/bin:/bin"}),
            "HELM_CONFIG_HOME": str(home / "config"), "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_DATA_HOME": str(home / "data"),
        }
        command = [str(self.binary), *args]
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=HELM_TIMEOUT_S,
                                check=False)
        if check and result.returncode != 0:
            raise HelmError(result.returncode, command, result.stdout, result.stderr)
        return result

    def template(self, *args: str, release: str = "taskfleet", namespace: str = "taskfleet") -> list[dict[str, Any]]:
        """``helm template`` of the chart, parsed (empty documents dropped)."""
        rendered = self.run("template", release, str(CHART), "--namespace", namespace, *args).stdout
        return [doc for doc in yaml.safe_load_all(rendered) if doc]

    def install(self, release: str, namespace: str, *args: str, values: Mapping[str, Any] | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        """``helm install`` (``values`` as an extra values file) into ``namespace``."""
        return self.run("install", release, str(CHART), "--namespace", namespace, *args,
                        *self._values_file(values), check=check)

    def upgrade(self, release: str, namespace: str, *args: str, values: Mapping[str, Any] | None = None
                ) -> subprocess.CompletedProcess[str]:
        return self.run("upgrade", release, str(CHART), "--namespace", namespace, *args, *self._values_file(values))

    def _values_file(self, values: Mapping[str, Any] | None) -> list[str]:
        if values is None:
            return []
        path = Path(tempfile.mkstemp(prefix="values-", suffix=".yaml", dir=self._home.name)[1])
        path.write_text(yaml.safe_dump(dict(values)), encoding="utf-8")
        return ["-f", str(path)]


def operator_container(kube: ControlPlane, namespace: str, deployment: str) -> dict[str, Any]:
    """The operator container of the chart's Deployment, as the API server stored it."""
    obj = json.loads(kube.kubectl("get", "deployment", deployment, "-n", namespace, "-o", "json").stdout)
    containers: list[dict[str, Any]] = obj["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "operator")


def service_account_kubeconfig(kube: ControlPlane, namespace: str, service_account: str, path: Path) -> Path:
    """Write a kubeconfig at ``path`` that authenticates as ServiceAccount ``namespace/service_account`` with a
    token from ``kubectl create token`` (a real, signed token: the API server enforces that account's RBAC)."""
    token = kube.kubectl("create", "token", service_account, "-n", namespace, f"--duration={TOKEN_DURATION}"
                         ).stdout.strip()
    ca = base64.b64encode((kube.pki / "ca.crt").read_bytes()).decode()
    config = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": CLUSTER, "cluster": {"server": kube.server_url, "certificate-authority-data": ca}}],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [{"name": CLUSTER, "context": {"cluster": CLUSTER, "user": service_account,
                                                   "namespace": namespace}}],
        "current-context": CLUSTER,
    }
    path.touch(mode=0o600)
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return path


def can_i(kube: ControlPlane, kubeconfig: Path, verb: str, resource: str, *, namespace: str | None = None,
          subresource: str | None = None) -> bool:
    """``kubectl auth can-i`` as the identity in ``kubeconfig``: what the API server's RBAC authorizer answers."""
    args: Sequence[str] = [f"--kubeconfig={kubeconfig}", "auth", "can-i", verb, resource]
    args = [*args, *(["-n", namespace] if namespace else ["--all-namespaces"])]
    if subresource:
        args.append(f"--subresource={subresource}")
    command = [str(kube.bin_dir / "kubectl"), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    answer = done.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl auth can-i: {done.stdout} {done.stderr}"
    return answer == "yes"
