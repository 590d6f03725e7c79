"""The operator's readiness: Ready only once kopf's watch has started and the Kubernetes API answered recently, and
not Ready again once the API has been silent for a while (kopf's /healthz alone stayed 200 while the operator could
not reach the API at all)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from taskfleet.errors import ClusterError, ConfigurationError
from taskfleet.operator.readiness import Readiness, verdict
from taskfleet.operator.runner import OperatorSettings, check_api

STALE_S = 30.0


@pytest.mark.parametrize(
    ("watching", "last_contact_s", "last_error", "now_s", "ready", "reason"),
    [
        pytest.param(False, None, None, 100.0, False, "has not answered yet", id="nothing-yet"),
        pytest.param(True, None, "Kubernetes API unreachable: DNS", 100.0, False,
                     "has not answered yet: Kubernetes API unreachable: DNS", id="never-reached-says-why"),
        pytest.param(False, 95.0, None, 100.0, False, "watch has not started", id="reached-not-watching"),
        pytest.param(True, 95.0, None, 100.0, True, "ok", id="watching-and-fresh"),
        pytest.param(True, 70.0, "timed out", 100.0, True, "ok", id="silent-exactly-stale-after-is-still-ready"),
        pytest.param(True, 69.0, "timed out", 100.0, False, "has not answered for 31 s: timed out",
                     id="silent-too-long"),
    ],
)
def test_readiness_needs_the_watch_and_a_recent_answer_of_the_api(
    watching: bool, last_contact_s: float | None, last_error: str | None, now_s: float, ready: bool, reason: str,
) -> None:
    seen = verdict(watching=watching, last_contact_s=last_contact_s, last_error=last_error, now_s=now_s,
                   stale_after_s=STALE_S)

    assert seen.ready is ready
    assert reason in seen.reason


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def test_an_operator_that_reached_the_api_turns_unready_when_it_goes_silent_and_ready_when_it_answers() -> None:
    clock, watching = Clock(), threading.Event()
    readiness = Readiness(stale_after_s=STALE_S, watching=watching, clock=clock)
    watching.set()
    readiness.reached()
    assert readiness.probe() == (True, "ok")

    clock.now_s += 20
    readiness.failed("Kubernetes API unreachable: connection refused")
    assert readiness.probe()[0] is True, "one failed check within the stale time keeps the pod in its Service"

    clock.now_s += 11
    ready, reason = readiness.probe()
    assert not ready
    assert reason == "the Kubernetes API has not answered for 31 s: Kubernetes API unreachable: connection refused"

    readiness.reached()
    assert readiness.probe() == (True, "ok")


class FakeKube:
    """Records the readiness checks' calls; ``serves`` is what discovery answers."""

    def __init__(self, *, serves: bool = True) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.serves = serves

    def list_task_queues(self, namespace: str | None, *, limit: int) -> list[dict[str, Any]]:
        self.calls.append(("list", namespace, limit))
        return []

    def serves_task_queues(self) -> bool:
        self.calls.append(("discovery",))
        return self.serves


@pytest.mark.parametrize(
    ("options", "call"),
    [
        pytest.param({"all_namespaces": True}, ("list", None, 1), id="cluster-wide-lists-cluster-wide"),
        pytest.param({"namespaces": ("team-*", "shop", "billing")}, ("list", "shop", 1),
                     id="namespaced-lists-the-first-named-namespace"),
        pytest.param({"namespaces": ("team-*",)}, ("discovery",), id="globs-only-ask-discovery"),
    ],
)
def test_the_api_check_lists_task_queues_where_the_watch_does(options: dict[str, Any], call: tuple[Any, ...]
                                                             ) -> None:
    kube = FakeKube()

    check_api(kube, OperatorSettings(**options))  # type: ignore[arg-type]

    assert kube.calls == [call]


def test_the_api_check_fails_while_task_queues_are_not_served() -> None:
    with pytest.raises(ClusterError, match="not served"):
        check_api(FakeKube(serves=False), OperatorSettings(namespaces=("team-*",)))  # type: ignore[arg-type]


def test_the_check_interval_must_fit_in_the_stale_time() -> None:
    with pytest.raises(ConfigurationError, match="stale-after"):
        OperatorSettings(all_namespaces=True, api_check_interval_s=40.0, api_stale_after_s=30.0)
