"""``taskfleet operator``'s command line: the watch scope is explicit, and kopf is configured on purpose."""

from __future__ import annotations

import logging
import threading
from typing import Any

import kopf
import pytest

from taskfleet.cli import build_parser
from taskfleet.errors import ClusterError, ConfigurationError
from taskfleet.operator.runner import OperatorSettings, configure_kopf, wait_for_crd
from taskfleet.worker.exitcodes import ExitCode


def test_the_operator_refuses_to_guess_which_namespaces_to_watch() -> None:
    args = build_parser().parse_args(["operator", "--log-format", "json"])

    assert args.handler(args, {}) == ExitCode.BAD_CONFIG


def test_namespaces_and_all_namespaces_exclude_each_other() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["operator", "-n", "team-a", "--all-namespaces"])


@pytest.mark.parametrize(
    ("options", "scope"),
    [
        pytest.param({"namespaces": ("team-a", "team-b")}, ("team-a", "team-b"), id="namespaced"),
        pytest.param({"all_namespaces": True}, (), id="cluster-wide"),
    ],
)
def test_operator_settings_take_exactly_one_scope(options: dict[str, object], scope: tuple[str, ...]) -> None:
    assert OperatorSettings(**options).namespaces == scope  # type: ignore[arg-type]


def test_operator_settings_reject_no_scope() -> None:
    with pytest.raises(ConfigurationError, match="--all-namespaces"):
        OperatorSettings()


def test_kopf_runs_standalone_with_our_annotations_and_quiet_event_posting() -> None:
    settings = kopf.OperatorSettings()

    configure_kopf(settings, OperatorSettings(all_namespaces=True))

    assert settings.peering.standalone is True
    assert settings.persistence.finalizer == "taskfleet.io/finalizer"
    assert settings.posting.level == logging.WARNING
    assert settings.watching.server_timeout == 300
    assert settings.watching.client_timeout is not None
    assert settings.watching.client_timeout > settings.watching.server_timeout


def test_a_peering_name_turns_standalone_off() -> None:
    settings = kopf.OperatorSettings()

    configure_kopf(settings, OperatorSettings(all_namespaces=True, peering="taskfleet"))

    assert (settings.peering.standalone, settings.peering.name, settings.peering.mandatory) == (
        False, "taskfleet", True)


@pytest.mark.parametrize(
    ("options", "scanning"),
    [
        pytest.param({"all_namespaces": True}, False, id="cluster-wide"),
        pytest.param({"namespaces": ("shop", "billing")}, False, id="named namespaces"),
        pytest.param({"namespaces": ("team-*",)}, True, id="a glob needs the Namespace watch"),
    ],
)
def test_kopf_watches_no_crds_or_namespaces_unless_a_glob_needs_them(options: dict[str, Any], scanning: bool
                                                                      ) -> None:
    # the chart grants nothing cluster-scoped: no CRD or Namespace list/watch
    settings = kopf.OperatorSettings()

    configure_kopf(settings, OperatorSettings(**options))

    assert settings.scanning.disabled is not scanning


class FakeKube:
    """Answers ``serves_task_queues`` from a script of answers (True, False, or an exception to raise)."""

    def __init__(self, *answers: bool | Exception) -> None:
        self.answers = list(answers)

    def serves_task_queues(self) -> bool:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_the_operator_waits_for_the_task_queue_crd_before_starting_kopf() -> None:
    kube = FakeKube(ClusterError("Kubernetes API unreachable"), False, True)

    assert wait_for_crd(kube, poll_s=0.0) is True  # type: ignore[arg-type]
    assert kube.answers == []


def test_a_stop_signal_ends_the_wait_for_the_crd() -> None:
    stop = threading.Event()
    stop.set()

    assert wait_for_crd(FakeKube(False), poll_s=0.0, stop_flag=stop) is False  # type: ignore[arg-type]


@pytest.mark.parametrize(("lease", "message"), [
    pytest.param("taskfleet-operator", "NAMESPACE/NAME", id="no namespace"),
    pytest.param("ops/", "NAMESPACE/NAME", id="no name"),
    pytest.param("ops/a/b", "NAMESPACE/NAME", id="two slashes"),
])
def test_leader_election_wants_a_namespace_and_a_name(lease: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        OperatorSettings(all_namespaces=True, leader_election_lease=lease)


def test_leader_election_and_kopf_peering_exclude_each_other() -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        OperatorSettings(all_namespaces=True, leader_election_lease="ops/taskfleet", peering="taskfleet")


def test_a_bad_leader_election_flag_is_a_configuration_error_at_the_command_line() -> None:
    args = build_parser().parse_args(["operator", "-A", "--leader-elect", "taskfleet", "--log-format", "json"])

    assert args.handler(args, {}) == ExitCode.BAD_CONFIG
