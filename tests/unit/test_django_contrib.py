"""Specification of ``taskfleet.contrib.django`` in one process, with the real Django on in-memory SQLite and the
in-process broker: on-commit sending, the app's settings from Django's, ``installed_apps`` and what the worker does
with connections between tasks. (The worker itself, fork and all, is tests/integration/test_django.py.)

Django is configured once for the whole test process, by the ``django_ready`` fixture.
"""

from __future__ import annotations

import inspect
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import django
import pytest
from django.conf import settings
from django.db import connections, transaction

from taskfleet import App, EncodeError, Message, Task
from taskfleet.contrib.django import DjangoTask, installed_apps
from taskfleet.contrib.django import connections as worker_connections

QUEUE = "web"


@pytest.fixture(scope="module", autouse=True)
def django_ready(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = tmp_path_factory.mktemp("django")  # files: Django never closes a connection to an in-memory database
    if not settings.configured:
        settings.configure(
            DATABASES={
                "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": folder / "default.sqlite3"},
                # persistent connections: kept between tasks unless one fails
                "other": {"ENGINE": "django.db.backends.sqlite3", "NAME": folder / "other.sqlite3",
                          "CONN_MAX_AGE": None},
            },
            INSTALLED_APPS=["django.contrib.contenttypes"],
            USE_TZ=True,
            SECRET_KEY="unit-tests",
            TASKFLEET_BROKER_URL="memory://",
            TASKFLEET_DEFAULT_QUEUE=QUEUE,
        )
    django.setup()


@pytest.fixture
def app() -> Iterator[App]:
    web = App("web", broker="memory://", default_queue=QUEUE, task_cls=DjangoTask)
    yield web
    web.close()


@pytest.fixture
def ship(app: App) -> DjangoTask[Any]:
    @app.task
    def ship(order_id: int) -> int:
        return order_id

    assert isinstance(ship, DjangoTask)
    return ship


def ready(app: App) -> int:
    return app.broker.queue_depth(QUEUE).ready


def sent(app: App, queue: str = QUEUE) -> list[Message]:
    """The messages waiting in ``queue``, taken out of it."""
    deliveries = app.broker.fetch([queue], max_messages=100, timeout_s=0)
    return [Message.decode(d.data, accept=frozenset({"json"})) for d in deliveries]


def sent_args(app: App) -> list[list[Any]]:
    return [list(message.args) for message in sent(app)]


# -- delay_on_commit / apply_async_on_commit --------------------------------------------------------------------------


def test_delay_on_commit_sends_nothing_until_the_transaction_commits(app: App, ship: DjangoTask[Any]) -> None:
    with transaction.atomic():
        returned = ship.delay_on_commit(7)
        assert ready(app) == 0, "not sent while the transaction is open"

    assert returned is None
    assert sent_args(app) == [[7]]


def test_delay_on_commit_sends_nothing_when_the_transaction_rolls_back(app: App, ship: DjangoTask[Any]) -> None:
    def place_order() -> None:
        with transaction.atomic():
            ship.delay_on_commit(7)
            raise LookupError("out of stock")

    with pytest.raises(LookupError):
        place_order()

    assert ready(app) == 0


def test_a_send_in_a_rolled_back_savepoint_is_dropped_and_the_outer_one_still_sent(
        app: App, ship: DjangoTask[Any]) -> None:
    with transaction.atomic():
        ship.delay_on_commit(1)
        try:
            with transaction.atomic():  # a savepoint
                ship.delay_on_commit(2)
                raise ValueError("inner step failed")
        except ValueError:
            pass

    assert sent_args(app) == [[1]]


def test_delay_on_commit_outside_a_transaction_sends_at_once(app: App, ship: DjangoTask[Any]) -> None:
    ship.delay_on_commit(3)

    assert sent_args(app) == [[3]]


def test_apply_async_on_commit_sends_with_the_options_given(app: App, ship: DjangoTask[Any]) -> None:
    with transaction.atomic():
        ship.apply_async_on_commit((5,), queue="priority", priority=9, task_id="chosen-id",
                                   headers={"tenant": "eu"})

    [message] = sent(app, "priority")
    assert (message.id, message.args, message.priority, message.headers["tenant"]) == ("chosen-id", (5,), 9, "eu")


def test_a_countdown_counts_from_the_commit(app: App, ship: DjangoTask[Any]) -> None:
    with transaction.atomic():
        ship.apply_async_on_commit((5,), countdown=60)

    depth = app.broker.queue_depth(QUEUE)
    assert (depth.ready, depth.delayed) == (0, 1)


def test_apply_async_on_commit_waits_for_the_transaction_of_the_database_it_names(
        app: App, ship: DjangoTask[Any]) -> None:
    with transaction.atomic(using="other"):
        with transaction.atomic():  # the default database's transaction commits first
            ship.apply_async_on_commit((9,), using="other")
        assert ready(app) == 0, "the default database's commit does not send it"

    assert sent_args(app) == [[9]]


def test_an_unknown_send_option_is_a_type_error_at_the_call_not_at_the_commit(ship: DjangoTask[Any]) -> None:
    with transaction.atomic(), pytest.raises(TypeError, match="retries"):
        ship.apply_async_on_commit((1,), retries=3)  # type: ignore[call-arg]


def test_a_send_that_fails_at_the_commit_is_raised_after_the_data_is_committed(ship: DjangoTask[Any]) -> None:
    with pytest.raises(EncodeError), transaction.atomic():
        ship.delay_on_commit(object())  # not JSON


def test_a_robust_send_that_fails_is_logged_with_the_task_name_and_the_commit_goes_on(
        app: App, ship: DjangoTask[Any], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="django.db.backends.base"), transaction.atomic():
        ship.apply_async_on_commit((object(),), robust=True)
        ship.delay_on_commit(2)

    assert "web.ship.apply_async" in caplog.text
    assert sent_args(app) == [[2]], "the next on-commit send still ran"


def test_the_on_commit_options_are_those_of_apply_async() -> None:
    def options(fn: Any) -> list[str]:
        return [p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY]

    assert options(DjangoTask.apply_async_on_commit) == ["using", "robust", *options(Task.apply_async)]


# -- settings and installed apps --------------------------------------------------------------------------------------


def test_an_app_reads_its_settings_from_django_settings_under_taskfleet_on_first_use() -> None:
    # Given an app configured from Django's settings by name (read lazily)
    lazy = App("lazy")
    lazy.config_from_object("django.conf:settings", namespace="TASKFLEET")
    opened: list[object] = []

    # When its first use is its broker (from another thread, so a deadlock fails the test instead of hanging it)
    thread = threading.Thread(target=lambda: opened.append(lazy.broker), daemon=True)
    thread.start()
    thread.join(timeout=5)

    # Then the settings were read, and the broker opened with them
    assert opened, "app.broker did not return"
    assert (lazy.settings.broker_url, lazy.settings.default_queue) == ("memory://", QUEUE)
    lazy.close()


def test_installed_apps_are_the_package_names_of_installed_apps() -> None:
    assert installed_apps() == ["django.contrib.contenttypes"]


@pytest.mark.parametrize(("code", "says"), [
    ("from taskfleet.contrib.django import installed_apps; installed_apps()", "Django's apps are not loaded"),
    ("import os; os.environ['DJANGO_SETTINGS_MODULE'] = 'no_such_settings'; from taskfleet import App; "
     "from taskfleet.contrib.django import worker_fixup; worker_fixup(App('x'))", "Django could not be set up"),
], ids=["not-set-up", "no-such-settings"])
def test_django_that_is_not_set_up_is_a_configuration_error_that_says_so(code: str, says: str) -> None:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)

    assert done.returncode != 0
    assert "taskfleet.errors.ConfigurationError" in done.stderr, done.stderr
    assert says in done.stderr, done.stderr


# -- connections between tasks ----------------------------------------------------------------------------------------


def open_both() -> None:
    for alias in ("default", "other"):
        connections[alias].ensure_connection()


def test_after_a_task_that_succeeded_only_connections_past_their_max_age_are_closed() -> None:
    open_both()

    worker_connections.after_task(succeeded=True)

    assert connections["default"].connection is None, "CONN_MAX_AGE = 0: closed after each task"
    assert connections["other"].connection is not None, "CONN_MAX_AGE = None: kept"


def test_after_a_task_that_did_not_succeed_every_connection_is_closed() -> None:
    open_both()

    worker_connections.after_task(succeeded=False)

    assert connections["default"].connection is None
    assert connections["other"].connection is None


def test_a_new_child_lets_go_of_inherited_connections_without_closing_them() -> None:
    open_both()
    inherited = connections["other"].connection

    worker_connections.forget_inherited()

    assert connections["other"].connection is None, "the next query opens a connection of its own"
    assert inherited.execute("SELECT 1").fetchone() == (1,), "not closed: closing would talk on the parent's socket"
    connections["other"].ensure_connection()
    assert connections["other"].connection is not inherited



_FIXUP_PROBE = """
import json, os, sys
from django.conf import settings
settings.configure(DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": sys.argv[1]}},
                   INSTALLED_APPS=[])
from django.db import connection
from taskfleet import App, signals
from taskfleet.contrib.django import worker_fixup

app = App("supervisor")
for _ in range(3):
    worker_fixup(app)
worker_fixup(App("another"))
receivers = [len(s.receivers) for s in (signals.worker_process_init, signals.task_prerun, signals.task_postrun)]


def fork_and_report():
    # [the new process started with this one's connection open, this one's is still open after the fork]
    connection.ensure_connection()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, b"1" if connection.connection is not None else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    return [os.read(read, 1) == b"1", connection.connection is not None]


supervisor = fork_and_report()
read, write = os.pipe()
pid = os.fork()
if pid == 0:  # a worker child whose task forks
    os.write(write, json.dumps(fork_and_report()).encode())
    os._exit(0)
os.waitpid(pid, 0)
print(json.dumps({"receivers": receivers, "supervisor": supervisor, "child": json.loads(os.read(read, 100))}))
"""


def test_worker_fixup_is_idempotent_and_closes_the_supervisors_connections_before_each_fork(tmp_path: Any) -> None:
    # Given worker_fixup called four times in one process (the supervisor), which then forks
    done = subprocess.run([sys.executable, "-c", _FIXUP_PROBE, str(tmp_path / "db.sqlite3")], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)

    # Then each receiver is connected once
    assert report["receivers"] == [1, 1, 1]
    # and the supervisor's connection was closed before its fork, so the new process started without it
    assert report["supervisor"] == [False, False]
    # while a fork in a child (a task's own) leaves the child's connection alone, as Django would
    assert report["child"] == [True, True]
