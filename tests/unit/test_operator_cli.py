"""``taskfleet operator``'s command line: the watch scope is explicit, and kopf is configured on purpose."""

from __future__ import annotations

import logging

import kopf
import pytest

from taskfleet.cli import build_parser
from taskfleet.errors import ConfigurationError
from taskfleet.operator.runner import OperatorSettings, configure_kopf
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
