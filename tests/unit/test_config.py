"""``App.config_from_object``, ``include`` and ``autodiscover_tasks``: settings read under our environment
variables' names, every mistake named, task modules found the way Celery users expect."""

from __future__ import annotations

import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from taskfleet import App, ConfigurationError, Message
from taskfleet.app import CONFIG_KEYWORDS
from taskfleet.celery_settings import CELERY_SETTINGS, celery_name
from taskfleet.config import config_keys
from taskfleet.settings import PublishRetry


def test_settings_are_read_from_a_mapping_under_the_names_of_our_environment_variables() -> None:
    app = App("cfg")
    app.config_from_object({
        "TASKFLEET_BROKER_URL": "memory://", "TASKFLEET_RESULT_BACKEND": "memory://",
        "TASKFLEET_DEFAULT_QUEUE": "web", "TASKFLEET_VISIBILITY_TIMEOUT_S": timedelta(minutes=2),
        "TASKFLEET_PUBLISH_RETRY": {"max_attempts": 2}, "TASKFLEET_ACCEPT_CONTENT": ["json"],
        "DEBUG": True, "CELERY_BROKER_URL": "redis://celery-stays:6379/0",  # outside the namespace: ignored
    })
    s = app.settings
    assert (s.broker_url, s.result_backend_url, s.default_queue) == ("memory://", "memory://", "web")
    assert s.visibility_timeout_s == 120.0
    assert s.publish_retry == PublishRetry(max_attempts=2)
    assert s.accept_content == frozenset({"json"})


def test_settings_are_read_from_a_class_and_from_a_module() -> None:
    class Config:
        TASKFLEET_BROKER_URL = "memory://"
        TASKFLEET_TIMEZONE = "Europe/Berlin"
        lowercase_is_ignored = 1

    app = App("cfg")
    app.config_from_object(Config)
    assert (app.settings.broker_url, app.timezone) == ("memory://", "Europe/Berlin")


def test_a_string_is_read_on_first_use_so_a_module_loading_it_may_be_imported_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an app told to read a module that cannot be imported yet (as Django's settings while they load)
    app = App("cfg")
    app.config_from_object("late_settings_mod:Settings", namespace="WEB")
    (tmp_path / "late_settings_mod.py").write_text("class Settings:\n    WEB_BROKER_URL = 'memory://'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "late_settings_mod", raising=False)
    # When the settings are first used, then they are read
    assert app.settings.broker_url == "memory://"


def test_every_unknown_key_under_the_namespace_is_named_and_celerys_names_are_explained() -> None:
    app = App("cfg")
    with pytest.raises(ConfigurationError) as caught:
        app.config_from_object({"TASKFLEET_BROKER_ULR": "memory://", "TASKFLEET_TASK_SERIALIZER": "json",
                                "TASKFLEET_TASK_ACKS_LATE": True})
    message = str(caught.value)
    assert "TASKFLEET_BROKER_ULR is not a Taskfleet setting (did you mean TASKFLEET_BROKER_URL?)" in message
    assert "TASKFLEET_TASK_SERIALIZER is Celery's 'task_serializer': use TASKFLEET_SERIALIZER" in message
    assert "TASKFLEET_TASK_ACKS_LATE is Celery's 'task_acks_late': Taskfleet has no equivalent (always" in message


def test_a_project_may_keep_the_celery_namespace_for_the_settings_both_share() -> None:
    app = App("cfg")
    app.config_from_object({"CELERY_BROKER_URL": "memory://", "CELERY_RESULT_BACKEND": "memory://"},
                           namespace="CELERY")
    assert app.settings.broker_url == app.settings.result_backend_url == "memory://"


def test_a_bad_value_or_namespace_or_source_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="TASKFLEET_PUBLISH_RETRY: expected a PublishRetry"):
        App("cfg").config_from_object({"TASKFLEET_PUBLISH_RETRY": 3})
    with pytest.raises(ConfigurationError, match="namespace must be upper case"):
        App("cfg").config_from_object({}, namespace="taskfleet")
    app = App("cfg")
    app.config_from_object("no_such_settings_module")
    with pytest.raises(ConfigurationError, match="cannot import it"):
        _ = app.settings


def test_include_and_a_celery_style_beat_schedule_are_read_from_configuration() -> None:
    app = App("cfg")
    app.config_from_object({
        "TASKFLEET_INCLUDE": ["tests.tasks"],
        "TASKFLEET_BEAT_SCHEDULE": {"add-every-30": {"task": "tests.add", "schedule": 30.0, "args": (16, 16),
                                                     "options": {"queue": "beat", "priority": 5}}},
    })
    assert app.discovery.include == ["tests.tasks"]
    entry = app.periodic_tasks["add-every-30"]
    assert (entry.signature.task, entry.signature.args, entry.signature.queue, entry.signature.priority) == (
        "tests.add", (16, 16), "beat", 5)


@pytest.mark.parametrize(("key", "name"), [
    ("task_serializer", "task_serializer"), ("CELERY_TASK_SERIALIZER", "task_serializer"),
    ("BROKER_URL", "broker_url"), ("CELERYD_CONCURRENCY", "worker_concurrency"), ("DEBUG", None),
])
def test_celerys_names_are_recognised_in_each_of_its_spellings(key: str, name: str | None) -> None:
    assert celery_name(key) == name


# -- task modules ----------------------------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project ``discproj`` with an app, a package with tasks, one without, and one whose tasks are broken."""
    root = tmp_path / "discproj"
    for package, tasks in {"orders": "from discproj.app import app\n\n@app.task\ndef ship() -> None: ...\n",
                           "plain": None, "broken": "raise RuntimeError('typo in tasks')\n"}.items():
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
        if tasks is not None:
            (root / package / "tasks.py").write_text(tasks)
    (root / "__init__.py").write_text("")
    (root / "app.py").write_text("from taskfleet import App\napp = App('discproj', broker='memory://')\n")
    (root / "more.py").write_text(textwrap.dedent("""
        from discproj.app import app

        @app.task
        def more() -> None: ...
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield root
    for name in [m for m in sys.modules if m == "discproj" or m.startswith("discproj.")]:
        del sys.modules[name]


def test_autodiscovery_and_include_import_task_modules_when_the_worker_starts(project: Path) -> None:
    from discproj.app import app  # type: ignore[import-not-found]

    # Given included modules and packages to search, nothing is imported yet
    app.configure(include=["discproj.more"])
    app.autodiscover_tasks(["discproj.orders", "discproj.plain"])
    assert "discproj.ship" not in app.tasks
    # When the worker starts, then include comes first, then the packages that have a tasks module
    assert app.import_tasks() == ["discproj.more", "discproj.orders.tasks"]
    assert {"discproj.more", "discproj.ship"} <= set(app.tasks)
    assert app.import_tasks() == ["discproj.more", "discproj.orders.tasks"]  # once per process


def test_packages_may_be_a_function_called_when_the_modules_are_imported(project: Path) -> None:
    from discproj.app import app

    packages: list[str] = []
    app.autodiscover_tasks(lambda: packages)
    packages.append("discproj.orders")
    assert app.import_tasks() == ["discproj.orders.tasks"]


def test_an_error_inside_a_task_module_or_a_missing_package_is_raised_not_skipped(project: Path) -> None:
    from discproj.app import app

    app.autodiscover_tasks(["discproj.broken"])
    with pytest.raises(ConfigurationError, match=r"'discproj.broken.tasks': RuntimeError: typo in tasks"):
        app.import_tasks()
    with pytest.raises(ConfigurationError, match="cannot find the package"):
        App("x").autodiscover_tasks(["no_such_package_here"], force=True)
def test_every_celery_setting_that_names_a_key_names_one_of_ours() -> None:
    ours = set(config_keys(CONFIG_KEYWORDS))
    named = {s.taskfleet for s in CELERY_SETTINGS.values() if s.taskfleet and s.taskfleet.startswith("TASKFLEET_")}
    assert named <= ours, sorted(named - ours)




def test_settings_outside_the_namespace_are_never_read() -> None:
    # Given a settings object one of whose other settings raises when read (as Django's empty SECRET_KEY does)
    class Settings:
        TASKFLEET_BROKER_URL = "memory://"

        @property
        def SECRET_KEY(self) -> str:
            raise RuntimeError("The SECRET_KEY setting must not be empty.")

    app = App("cfg")
    app.config_from_object(Settings())
    assert app.settings.broker_url == "memory://"


def test_routes_and_compression_are_read_from_configuration_too() -> None:
    app = App("cfg", broker="memory://")
    app.config_from_object({"TASKFLEET_TASK_ROUTES": {"cfg.report*": {"queue": "slow", "priority": 2}},
                            "TASKFLEET_COMPRESSION": "gzip"})

    @app.task
    def report_daily() -> None: ...

    sent = report_daily.delay()
    (delivery,) = app.broker.fetch(["slow"], max_messages=1, timeout_s=0)
    message = Message.decode(delivery.data, accept=frozenset({"json"}))
    assert (message.id, message.priority) == (sent.id, 2)
    assert app.settings.compression == "gzip"


def test_the_migration_guide_shows_every_celery_setting_as_the_table_says() -> None:
    guide = (Path(__file__).resolve().parents[2] / "docs" / "coming-from-celery.md").read_text(encoding="utf-8")
    for name, setting in CELERY_SETTINGS.items():
        ours = f"`{setting.taskfleet}`" if setting.taskfleet else "—"
        row = f"| `{name}` | {ours} | {setting.note} |"
        assert row in guide.splitlines(), f"docs/coming-from-celery.md lacks the row: {row}"
