"""Specification of where ``taskfleet worker`` and ``taskfleet beat`` serve their health checks: an explicit port is
served or the start fails; the container default is served when it is free and given up with a warning when not."""

from __future__ import annotations

import argparse
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskfleet.errors import ConfigurationError
from taskfleet.worker import worker_command
from taskfleet.worker.health import start_health_server
from taskfleet.worker.settings import DEFAULT_HEALTH_PORT_IN_CONTAINER
from taskfleet.worker.worker_command import HealthPort, resolve_health_port

DEFAULT = DEFAULT_HEALTH_PORT_IN_CONTAINER


@pytest.fixture
def docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where this test's ``/.dockerenv`` is: absent until the test creates it."""
    marker = tmp_path / ".dockerenv"
    monkeypatch.setattr(worker_command, "DOCKERENV", marker)
    return marker


@pytest.mark.parametrize(
    ("flag", "environ", "dockerenv", "expected"),
    [
        pytest.param(None, {}, False, None, id="outside a container: none"),
        pytest.param(None, {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, False, HealthPort(DEFAULT, explicit=False),
                     id="in a pod: the default, not required"),
        pytest.param(None, {}, True, HealthPort(DEFAULT, explicit=False), id="in Docker: the default, not required"),
        pytest.param(9100, {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, True, HealthPort(9100, explicit=True),
                     id="the flag: required"),
        pytest.param(None, {"TASKFLEET_HEALTH_PORT": "9200"}, False, HealthPort(9200, explicit=True),
                     id="the env var: required"),
        pytest.param(0, {"TASKFLEET_HEALTH_PORT": "9200"}, True, HealthPort(0, explicit=True),
                     id="the flag wins over the env var"),
        pytest.param(None, {"TASKFLEET_HEALTH_PORT": ""}, True, HealthPort(DEFAULT, explicit=False),
                     id="an empty env var is unset"),
    ],
)
def test_the_health_port_is_the_flag_then_the_env_var_then_the_container_default(
        docker: Path, flag: int | None, environ: dict[str, str], dockerenv: bool, expected: HealthPort | None
) -> None:
    if dockerenv:
        docker.touch()

    assert resolve_health_port(argparse.Namespace(health_port=flag), environ) == expected


def test_a_health_port_env_var_that_is_not_a_number_is_a_configuration_error(docker: Path) -> None:
    with pytest.raises(ValueError, match="TASKFLEET_HEALTH_PORT must be a port number, not 'eighty'"):
        resolve_health_port(argparse.Namespace(health_port=None), {"TASKFLEET_HEALTH_PORT": "eighty"})


class _Log:
    """Records what ``start_health_server`` logs."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def warning(self, event: str, **kw: Any) -> None:
        self.lines.append(("warning", event, kw))

    def error(self, event: str, **kw: Any) -> None:
        self.lines.append(("error", event, kw))


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another socket listens on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield int(taken.getsockname()[1])


def _start(port: int, *, required: bool, log: _Log) -> Any:
    return start_health_server(host="127.0.0.1", port=port, required=required, liveness=lambda: (True, ""),
                               readiness=lambda: (True, ""), metrics=lambda: (b"", "text/plain"),
                               log=log)  # type: ignore[arg-type]


def test_a_busy_default_port_is_given_up_with_a_warning_and_the_process_goes_on(busy_port: int) -> None:
    log = _Log()

    assert _start(busy_port, required=False, log=log) is None

    [(level, event, fields)] = log.lines
    assert (level, event) == ("warning", "health checks not served: their default port is in use")
    assert fields["port"] == busy_port
    assert "TASKFLEET_HEALTH_PORT" in fields["hint"]


def test_a_busy_explicit_port_is_a_configuration_error_that_names_the_port(busy_port: int) -> None:
    log = _Log()

    with pytest.raises(ConfigurationError, match=rf"cannot serve health checks on 127\.0\.0\.1:{busy_port}: .*in use"):
        _start(busy_port, required=True, log=log)
    assert log.lines == []


@pytest.mark.parametrize("required", [True, False], ids=["explicit", "default"])
def test_a_free_port_is_served(required: bool) -> None:
    server = _start(0, required=required, log=_Log())

    assert server is not None
    server.stop()
