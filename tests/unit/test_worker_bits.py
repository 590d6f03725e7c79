"""Specification of the worker's small parts: loading the user's App (taskfleet.worker.loader), worker settings
(taskfleet.worker.settings) and what a child holds (taskfleet.worker.child.Holdings)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from taskfleet import App, ConfigurationError
from taskfleet.brokers.base import Delivery
from taskfleet.worker.child import Holdings
from taskfleet.worker.loader import AppImportError, load_app
from taskfleet.worker.settings import WorkerSettings
from tests import tasks

# -- load_app ----------------------------------------------------------------------------------------------------


def test_load_app_finds_module_colon_attribute() -> None:
    assert load_app("tests.tasks:app") is tasks.app


def test_load_app_finds_the_one_app_of_a_module() -> None:
    assert load_app("tests.tasks") is tasks.app


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        pytest.param("tests.no_such_module", "cannot import 'tests.no_such_module': ModuleNotFoundError",
                     id="missing module"),
        pytest.param("tests.tasks:add", r"tests.tasks:add is not a taskfleet.App \(got Task\)",
                     id="attribute is a task"),
        pytest.param("tests.tasks:nope", r"tests.tasks:nope is not a taskfleet.App \(got NoneType\)",
                     id="missing attribute"),
        pytest.param("json", "module 'json' holds 0 App objects; name one as json:attr", id="module without an App"),
        pytest.param(":app", "expected 'module:attribute' or 'module'", id="no module"),
        pytest.param("", "expected 'module:attribute' or 'module'", id="empty"),
    ],
)
def test_load_app_explains_what_it_could_not_load(spec: str, match: str) -> None:
    with pytest.raises(AppImportError, match=match):
        load_app(spec)


def test_load_app_finds_a_module_in_the_current_directory_like_python_m(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `taskfleet worker -A tasks:app` next to tasks.py, or in the image's /app, as a console script
    (tmp_path / "cwd_tasks_module.py").write_text("from taskfleet import App\napp = App('cwd')\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])

    assert load_app("cwd_tasks_module:app").name == "cwd"
    assert sys.path[0] == str(tmp_path)


def test_an_error_raised_while_importing_user_code_is_an_app_import_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_tasks_module.py").write_text("raise RuntimeError('no config')\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))

    with pytest.raises(AppImportError, match="RuntimeError: no config"):
        load_app("broken_tasks_module")


def test_a_module_with_two_apps_must_name_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "two_apps_module.py").write_text(
        "from taskfleet import App\nfirst = App('a')\nsecond = App('b')\n", encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    with pytest.raises(AppImportError, match="holds 2 App objects"):
        load_app("two_apps_module")
    assert isinstance(load_app("two_apps_module:second"), App)


# -- WorkerSettings ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        pytest.param({"queues": ()}, "at least one queue", id="no queues"),
        pytest.param({"queues": ("ok", "not ok")}, "invalid queue name 'not ok'", id="bad queue name"),
        pytest.param({"concurrency": 0}, "concurrency must be >= 1", id="concurrency 0"),
        pytest.param({"prefetch": 0}, "prefetch must be >= 1", id="prefetch 0"),
        pytest.param({"drain_timeout_s": -1.0}, "drain_timeout_s must be >= 0", id="negative drain timeout"),
        pytest.param({"max_tasks_per_child": 0}, "max_tasks_per_child must be >= 1", id="max tasks 0"),
        pytest.param({"max_memory_per_child_mb": 0}, "max_memory_per_child_mb must be > 0", id="max memory 0"),
        pytest.param({"health_port": 65536}, "health_port must be 0-65535", id="port too high"),
        pytest.param({"health_port": -1}, "health_port must be 0-65535", id="negative port"),
    ],
)
def test_worker_settings_refuse_impossible_values(changes: dict[str, Any], match: str) -> None:
    options: dict[str, Any] = {"queues": ("default",), **changes}

    with pytest.raises(ConfigurationError, match=match):
        WorkerSettings(**options)


def test_worker_settings_accept_sensible_values() -> None:
    settings = WorkerSettings(queues=("default", "emails"), concurrency=1, prefetch=1, drain_timeout_s=0,
                              max_tasks_per_child=1, health_port=0)

    assert settings.queues == ("default", "emails")


def test_worker_concurrency_defaults_to_at_least_one() -> None:
    assert WorkerSettings(queues=("default",)).concurrency >= 1


# -- Holdings ----------------------------------------------------------------------------------------------------


def _deliveries(*ids: str) -> list[Delivery]:
    return [Delivery("q", message_id, b"") for message_id in ids]


def _ids(deliveries: list[Delivery]) -> list[str]:
    return [d.message_id for d in deliveries]


def test_start_next_takes_deliveries_in_the_order_they_were_added() -> None:
    holdings = Holdings()
    holdings.add(_deliveries("a", "b"))
    holdings.add(_deliveries("c"))

    started = [holdings.start_next() for _ in range(4)]

    assert [d.message_id if d else None for d in started] == ["a", "b", "c", None]


def test_all_includes_the_running_delivery_and_the_waiting_ones() -> None:
    holdings = Holdings()
    holdings.add(_deliveries("a", "b", "c"))

    holdings.start_next()

    assert sorted(_ids(holdings.all())) == ["a", "b", "c"]


def test_a_finished_delivery_is_no_longer_held() -> None:
    holdings = Holdings()
    holdings.add(_deliveries("a", "b"))
    holdings.start_next()

    holdings.finish()

    assert _ids(holdings.all()) == ["b"]


def test_take_waiting_without_a_threshold_takes_every_unstarted_delivery() -> None:
    holdings = Holdings()
    holdings.add(_deliveries("a", "b", "c"))
    holdings.start_next()

    taken = holdings.take_waiting()

    assert _ids(taken) == ["b", "c"]
    assert _ids(holdings.all()) == ["a"]


def test_take_waiting_takes_nothing_while_the_running_task_is_younger_than_the_threshold() -> None:
    holdings = Holdings()
    holdings.add(_deliveries("a", "b"))
    holdings.start_next()

    assert holdings.take_waiting(if_running_longer_than_s=3600) == []
    assert sorted(_ids(holdings.all())) == ["a", "b"]


def test_take_waiting_takes_the_unstarted_ones_once_the_running_task_is_older_than_the_threshold() -> None:
    holdings = Holdings()
    holdings.add(_deliveries("a", "b"))
    holdings.start_next()

    assert _ids(holdings.take_waiting(if_running_longer_than_s=0.0)) == ["b"]


def test_take_waiting_with_a_threshold_takes_nothing_when_no_task_is_running() -> None:
    holdings = Holdings()
    holdings.add(_deliveries("a", "b"))

    assert holdings.take_waiting(if_running_longer_than_s=0.0) == []
