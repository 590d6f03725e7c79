"""e2e fixtures: the TaskQueue CRD applied once per session, helm, and the operator as the chart deploys it.

The ``operator`` fixture installs the Helm chart, once per RBAC mode, and runs the chart's operator command line
locally (there is no kubelet) with a token of the chart's own ServiceAccount, not admin. Every operator scenario
therefore runs twice, proving the chart's RBAC is enough in both modes:

- ``cluster-wide``: ``watchNamespaces: []``, a ClusterRole;
- ``namespaced``: ``watchNamespaces: [a pool of namespaces]``, a Role in each; tests draw their namespace from the
  pool (the ``namespace`` fixture), as a user's TaskQueues live in watched namespaces.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.chart import Helm, operator_container, service_account_kubeconfig
from tests.support.k8s import ControlPlane
from tests.support.operator import CRD, OperatorProcess
from tests.support.servers import ServerUnavailable, require_server

RBAC_MODES = ("cluster-wide", "namespaced")
#: Namespaces the namespaced operator watches: at least the number of operator tests in one module.
NAMESPACE_POOL = 16


@pytest.fixture(scope="session")
def crd(kube: ControlPlane) -> ControlPlane:
    """The control plane with the TaskQueue CRD established."""
    kube.apply_crd(CRD)
    return kube


@pytest.fixture(scope="session")
def helm(kube: ControlPlane) -> Iterator[Helm]:
    """The real helm against the control plane, with a private config/cache directory."""
    tool = Helm(kube)
    yield tool
    tool.close()


@pytest.fixture(scope="module")
def offline_helm() -> Iterator[Helm]:
    """helm without a cluster (lint and template need none)."""
    try:
        tool = Helm()
    except ServerUnavailable as exc:
        require_server(str(exc))
    yield tool
    tool.close()


@pytest.fixture(scope="module", params=RBAC_MODES)
def operator(crd: ControlPlane, helm: Helm, request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """The chart's operator (its Deployment's args, its ServiceAccount's token) against the control plane; its log
    is printed if a test fails."""
    mode: str = request.param
    watched = [crd.create_namespace("watched") for _ in range(NAMESPACE_POOL)] if mode == "namespaced" else []
    release_namespace = crd.create_namespace("taskfleet")
    release = f"op-{mode}"
    helm.install(release, release_namespace, values={"watchNamespaces": watched})
    fullname = f"{release}-taskfleet"
    container = operator_container(crd, release_namespace, fullname)
    kubeconfig = service_account_kubeconfig(crd, release_namespace, fullname,
                                            tmp_path_factory.mktemp("sa") / "kubeconfig")
    process = OperatorProcess(crd, args=container["args"], kubeconfig=kubeconfig).wait_ready()
    process.watches_all, process.free_namespaces = not watched, watched
    yield process
    process.stop()
    # Modules share the release names; its cluster-scoped RBAC would keep the next module's install from owning them.
    helm.run("uninstall", release, "--namespace", release_namespace)


@pytest.fixture
def namespace(crd: ControlPlane, request: pytest.FixtureRequest) -> str:
    """A fresh namespace the test's operator serves (namespaces never finish deleting without controllers, so
    none is deleted)."""
    if "operator" in request.fixturenames:
        process: OperatorProcess = request.getfixturevalue("operator")
        if not process.watches_all:
            assert process.free_namespaces, f"all {NAMESPACE_POOL} watched namespaces are used: raise NAMESPACE_POOL"
            return process.free_namespaces.pop(0)
    return crd.create_namespace("tq")
