"""The chart on a real node: `helm install --wait` and `helm test --logs` with the image built from this tree, and
the operator running in its own pod under the chart's ServiceAccount."""

from __future__ import annotations

import pytest

from tests.realnode.cluster import TASKFLEET_IMAGE, RealNode
from tests.realnode.conftest import Release

pytestmark = pytest.mark.timeout(300)


def test_helm_install_wait_returns_with_the_operator_running_in_its_pod_under_the_charts_service_account(
    cluster: RealNode, chart: Release
) -> None:
    # Given the chart installed with --wait (the chart fixture); Then its operator pod is Running and Ready, from
    # the locally built image, as the chart's own ServiceAccount (not admin: that is all the RBAC it has).
    selector = f"app.kubernetes.io/instance={chart.name},app.kubernetes.io/component=operator"
    pods = cluster.pods(chart.namespace, selector)
    assert len(pods) == 1, pods
    pod = pods[0]
    assert pod["status"]["phase"] == "Running"
    assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "True"
    assert pod["spec"]["serviceAccountName"] == chart.fullname
    assert pod["spec"]["containers"][0]["image"] == TASKFLEET_IMAGE
    print(f"helm install --wait: {chart.install_seconds:.1f} s; node up: {cluster.up_seconds:.1f} s")


def test_helm_test_passes_and_prints_the_test_pods_log(cluster: RealNode, chart: Release) -> None:
    # When `helm test --logs` runs (the test pod reads the operator's /metrics through its Service's DNS name)
    result = cluster.helm("test", chart.name, "--namespace", chart.namespace, "--logs", "--timeout", "2m")
    # Then it passes, and the log of the passed pod is printed (no "unable to get pod logs": the pod is kept)
    assert "Phase:          Succeeded" in result.stdout, result.stdout
    assert "operator metrics OK" in result.stdout, result.stdout
    # And a second run replaces the kept pod (before-hook-creation) instead of failing on its name
    again = cluster.helm("test", chart.name, "--namespace", chart.namespace, "--logs", "--timeout", "2m")
    assert "operator metrics OK" in again.stdout, again.stdout
