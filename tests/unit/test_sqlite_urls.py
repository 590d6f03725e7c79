"""How ``sqlite:///`` URLs name a database file, and which ones are refused (SQLAlchemy's spelling)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from taskfleet._connections.sqlite import sqlite_path
from taskfleet.backends import connect as connect_backend
from taskfleet.brokers import connect
from taskfleet.errors import BrokerConnectionError, ConfigurationError
from taskfleet.settings import BackendSettings, BrokerSettings


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:////abs/taskfleet.db", "/abs/taskfleet.db"),
        ("sqlite:///relative/taskfleet.db", os.path.join(os.getcwd(), "relative/taskfleet.db")),
        ("sqlite:///taskfleet.db", os.path.join(os.getcwd(), "taskfleet.db")),
        ("SQLITE:////abs/with%20space.db", "/abs/with space.db"),
    ],
)
def test_a_sqlite_url_names_an_absolute_file_path(url: str, path: str) -> None:
    assert sqlite_path(url) == path


@pytest.mark.parametrize(
    "url",
    ["sqlite://", "sqlite:///", "sqlite:///:memory:", "sqlite://host/x.db", "sqlite:////x.db?mode=ro",
     "sqlite:///file:x.db", "sqlite:////tmp/dir/"],
)
def test_a_sqlite_url_without_a_shareable_file_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError):
        connect(BrokerSettings(url=url))


def test_the_broker_creates_its_file_and_parent_directories_on_first_use(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "taskfleet.db"
    broker = connect(BrokerSettings(url=f"sqlite:///{path}"))
    assert not path.exists(), "nothing is opened before first use"

    broker.ping()

    assert path.exists()
    broker.close()


def test_a_file_that_cannot_be_created_raises_broker_connection_error_on_ping() -> None:
    backend = connect_backend(BackendSettings(url="sqlite:////dev/null/taskfleet/results.db"))

    with pytest.raises(BrokerConnectionError):
        backend.ping()


def test_a_broker_used_before_fork_opens_its_own_connection_in_the_child(tmp_path: Path) -> None:
    # Given a broker whose connection is open in the parent
    broker = connect(BrokerSettings(url=f"sqlite:///{tmp_path / 'fork.db'}"))
    broker.enqueue("q", "m1", b"x")

    # When a forked child fetches and acks through the same object
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            [delivery] = broker.fetch(["q"], max_messages=1, timeout_s=2)
            broker.ack([delivery])
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)

    # Then the child succeeded and the parent's connection still works and sees its ack
    assert os.waitstatus_to_exitcode(status) == 0
    assert broker.queue_depth("q").total == 0
    broker.close()
