"""The envtest control plane itself (``kube``): the apiserver is the version we build, and kubectl can write and
read objects through the fixture's kubeconfig. If these fail, every other e2e test would fail for the same reason."""

from __future__ import annotations

import json

import pytest

from tests.support.k8s import K8S_VERSION, ControlPlane

pytestmark = pytest.mark.e2e


def test_apiserver_reports_the_built_version(kube: ControlPlane) -> None:
    version = json.loads(kube.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == K8S_VERSION


def test_configmap_round_trip(kube: ControlPlane) -> None:
    namespace = kube.create_namespace("smoke")
    kube.kubectl("-n", namespace, "create", "configmap", "greeting", "--from-literal=hello=world")
    configmap = json.loads(kube.kubectl("-n", namespace, "get", "configmap", "greeting", "-o", "json").stdout)
    assert configmap["metadata"]["namespace"] == namespace
    assert configmap["data"] == {"hello": "world"}
