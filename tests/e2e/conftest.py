"""e2e fixtures: the TaskQueue CRD applied once per session, and one operator process per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.k8s import ControlPlane
from tests.support.operator import CRD, OperatorProcess


@pytest.fixture(scope="session")
def crd(kube: ControlPlane) -> ControlPlane:
    """The control plane with the TaskQueue CRD established."""
    kube.apply_crd(CRD)
    return kube


@pytest.fixture(scope="module")
def operator(crd: ControlPlane) -> Iterator[OperatorProcess]:
    """``taskfleet operator --all-namespaces`` against the control plane; its log is printed if a test fails."""
    process = OperatorProcess(crd).wait_ready()
    yield process
    process.stop()


@pytest.fixture
def namespace(crd: ControlPlane) -> str:
    """A fresh namespace (namespaces never finish deleting without controllers, so none is deleted)."""
    return crd.create_namespace("tq")
