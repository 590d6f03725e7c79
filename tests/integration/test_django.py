"""A real Django project, examples/07-django (a shop on SQLite), with a real ``taskfleet worker -A proj``: its view
sends a task on commit that the worker runs, writing through the ORM; a rolled-back order sends nothing; settings
come from ``settings.py`` under ``TASKFLEET_``; tasks are found in ``INSTALLED_APPS``; and a worker's children
never use a database connection opened before the fork, and drop them between tasks as ``CONN_MAX_AGE`` says.

Each test works in a copy of the example (fresh ``db.sqlite3`` and ``taskfleet.db``), runs Django in subprocesses
(``manage.py migrate``, ``manage.py shell -c``, ``send.py``) and the worker as the README says.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from taskfleet import App
from tests.support.workers import LoggedWorkers

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "07-django"
PROBE = ROOT / "tests" / "support" / "django_probe"
TASKFLEET = str(Path(sys.executable).with_name("taskfleet"))
RUN_TIMEOUT_S = 60.0
WORKER_START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
RESULT_TIMEOUT_S = 20.0

#: What the README tells the reader to run, in this directory.
COMMANDS = ["python manage.py migrate", "taskfleet worker -A proj -c 2", "python send.py"]
#: What ``send.py`` prints; the README shows each line.
EXPECTED_OUTPUT = [
    "POST /orders/ item=tea quantity=2    -> 201: order saved, ship_order sent on commit",
    "GET /orders/<id>/                    -> 'shipped' (the worker saved it through the ORM)",
    "POST /orders/ item=tea quantity=50   -> 409 only 8 tea in stock: rolled back, ship_order not sent",
    "messages sent by this process        -> 1 (proj.ship_order)",
]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the developer's Taskfleet and Django settings; a free health port for workers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKFLEET_") and k != "DJANGO_SETTINGS_MODULE"}
    return {**env, "TASKFLEET_HEALTH_PORT": "0", "PYTHONUNBUFFERED": "1", **extra}


def run(project: Path, *command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *command], cwd=project, env=env or clean_env(), capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_S, check=False)


def output(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit code {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout


def shell(project: Path, code: str, env: dict[str, str] | None = None) -> Any:
    """Run ``code`` in ``manage.py shell -c`` (Django set up with the project's settings); its last line of output,
    read as JSON."""
    return json.loads(output(run(project, "manage.py", "shell", "-c", code, env=env)).splitlines()[-1])


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A migrated copy of the example, with the connection probe beside it (used only by the tests that install
    it through ``proj.settings_probe``)."""
    copy = Path(shutil.copytree(EXAMPLE, tmp_path / "07-django",
                                ignore=shutil.ignore_patterns("db.sqlite3*", "taskfleet.db*", "__pycache__")))
    shutil.copytree(PROBE / "probe", copy / "probe", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROBE / "settings_probe.py", copy / "proj" / "settings_probe.py")
    output(run(copy, "manage.py", "migrate", "-v", "0"))
    return copy


StartWorker = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def start_worker(project: Path) -> Iterator[StartWorker]:
    """Factory: ``start_worker("-c", "2", env=...)`` runs ``taskfleet worker -A proj ...`` in the project and waits
    until it has started; stopped with SIGTERM at the end (its log printed when the test fails)."""
    workers = LoggedWorkers(project, start_timeout_s=WORKER_START_TIMEOUT_S, stop_timeout_s=STOP_TIMEOUT_S)

    def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        return workers.start([TASKFLEET, "worker", "-A", "proj", *args], env or clean_env())

    yield start
    workers.stop_all()


@pytest.fixture(params=["embedded", "redis"])
def broker_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The environment of every process of the test: the example's embedded SQLite broker (its settings' default),
    or an empty Redis through ``TASKFLEET_BROKER_URL`` (results stay in the SQLite file)."""
    if request.param == "redis":
        return clean_env(TASKFLEET_BROKER_URL=request.getfixturevalue("redis_url"))
    return clean_env()


# -- the example, as its README says ----------------------------------------------------------------------------------


def test_the_readme_shows_the_commands_and_the_output_this_suite_checks() -> None:
    readme = (EXAMPLE / "README.md").read_text(encoding="utf-8")

    for command in COMMANDS:
        assert command in readme, f"README.md does not show `{command}`"
    for line in EXPECTED_OUTPUT:
        assert line in readme.splitlines(), f"README.md does not show the output line {line!r}"


def test_a_view_sends_on_commit_and_a_real_worker_ships_the_order_through_the_orm(
        project: Path, start_worker: StartWorker, broker_env: dict[str, str]) -> None:
    # Given the worker of the README
    start_worker("-c", "2", env=broker_env)

    # When send.py places an order through the view (and one that is rolled back)
    printed = output(run(project, "send.py", env=broker_env))

    # Then the worker shipped the committed order, writing through the ORM, and nothing was sent for the other
    assert printed.splitlines() == EXPECTED_OUTPUT
    orders = shell(project, "from orders.models import Order; import json; "
                            "print(json.dumps(list(Order.objects.values_list('status', flat=True))))", broker_env)
    assert orders == ["shipped"], "the rolled-back order was never saved"


def test_a_rolled_back_order_sends_nothing_and_a_committed_one_sends_one_message(
        project: Path, broker_env: dict[str, str]) -> None:
    # Given no worker, so whatever is sent stays in the queue
    code = """
import json
from django.test import Client
from proj.taskfleet import app
client = Client()
depth = lambda: app.broker.queue_depth("shop").ready
refused = client.post("/orders/", {"item": "tea", "quantity": 50}).status_code
after_rollback = depth()
placed = client.post("/orders/", {"item": "tea", "quantity": 1}).status_code
after_commit = depth()
print(json.dumps([refused, after_rollback, placed, after_commit]))
"""
    # When an order is rolled back (out of stock), then one is committed
    refused, after_rollback, placed, after_commit = shell(project, code, broker_env)

    # Then the rolled-back one left the queue empty, and the committed one put its message there
    assert (refused, after_rollback) == (409, 0)
    assert (placed, after_commit) == (201, 1)


# -- settings and autodiscovery ---------------------------------------------------------------------------------------


def test_the_app_reads_its_settings_from_django_settings_under_the_taskfleet_namespace(project: Path) -> None:
    settings = shell(project, "import json; from proj.taskfleet import app; s = app.settings; print(json.dumps("
                              "[s.broker_url, s.result_backend_url, s.default_queue, s.result_expires_s, s.timezone]))")

    db = f"sqlite:///{project / 'taskfleet.db'}"
    assert settings == [db, db, "shop", 86400.0, "UTC"]


def test_a_taskfleet_setting_that_is_not_ours_stops_the_worker_and_names_it(project: Path) -> None:
    # Given settings with a misspelt key and one of Celery's names under TASKFLEET_
    (project / "proj" / "settings_typo.py").write_text(
        "from proj.settings import *  # noqa: F403\n"
        "TASKFLEET_BROKER = 'redis://x'\nTASKFLEET_TASK_SERIALIZER = 'json'\n")

    # When the worker starts with them
    done = subprocess.run([TASKFLEET, "worker", "-A", "proj", "-c", "1"], cwd=project, capture_output=True, text=True,
                          env=clean_env(DJANGO_SETTINGS_MODULE="proj.settings_typo"), timeout=RUN_TIMEOUT_S,
                          check=False)

    # Then it does not start, and says which keys are wrong
    assert done.returncode != 0
    logged = done.stdout + done.stderr
    assert "TASKFLEET_BROKER is not a Taskfleet setting" in logged, logged
    assert "TASKFLEET_TASK_SERIALIZER is Celery's" in logged, logged


def test_settings_that_django_cannot_load_stop_the_worker_with_the_reason(project: Path) -> None:
    done = subprocess.run([TASKFLEET, "worker", "-A", "proj", "-c", "1"], cwd=project, capture_output=True, text=True,
                          env=clean_env(DJANGO_SETTINGS_MODULE="proj.no_such_settings"), timeout=RUN_TIMEOUT_S,
                          check=False)

    assert done.returncode == 3, done.stdout + done.stderr  # ExitCode.APP_IMPORT_ERROR
    assert "proj.no_such_settings" in done.stdout + done.stderr


def test_autodiscovery_imports_the_tasks_module_of_each_installed_app_that_has_one(project: Path) -> None:
    # Given INSTALLED_APPS = django.contrib.contenttypes (no tasks module), orders (and probe, with the probe settings)
    code = ("import json; from proj.taskfleet import app; imported = app.import_tasks(); "
            "print(json.dumps([imported, sorted(n for n in app.tasks if n.startswith('proj.'))]))")

    imported, tasks = shell(project, code)
    imported_with_probe, _ = shell(project, code, clean_env(DJANGO_SETTINGS_MODULE="proj.settings_probe"))

    assert imported == ["orders.tasks"]
    assert tasks == ["proj.ship_order"]
    assert imported_with_probe == ["orders.tasks", "probe.tasks"]


def test_taskfleet_check_shows_the_settings_from_django_and_the_discovered_tasks(project: Path) -> None:
    done = subprocess.run([TASKFLEET, "check", "-A", "proj"], cwd=project, capture_output=True, text=True,
                          env=clean_env(), timeout=RUN_TIMEOUT_S, check=False)

    shown = [line.split() for line in output(done).splitlines()]
    assert ["default_queue", "shop"] in shown
    assert ["orders.tasks"] in shown
    assert ["proj.ship_order"] in shown


# -- database connections in the worker -------------------------------------------------------------------------------


def probe_client(project: Path) -> App:
    db = f"sqlite:///{project / 'taskfleet.db'}"
    return App("probe-client", broker=db, result_backend=db, default_queue="shop")


def report(client: App) -> dict[str, Any]:
    result: dict[str, Any] = client.send("proj.connection_report").get(timeout=RESULT_TIMEOUT_S)
    return result


def test_a_child_never_uses_a_connection_its_supervisor_opened_and_closes_its_own_after_each_task(
        project: Path, start_worker: StartWorker) -> None:
    # Given a worker whose supervisor opened a database connection while importing probe.tasks (CONN_MAX_AGE = 0)
    worker = start_worker("-c", "1", env=clean_env(DJANGO_SETTINGS_MODULE="proj.settings_probe"))
    client = probe_client(project)

    # When its child runs two tasks that use the database
    first, second = report(client), report(client)

    # Then neither started on an inherited connection, and each opened its own (the first was closed after its task)
    assert first["import_pid"] == worker.pid != first["pid"] == second["pid"]
    assert (first["inherited"], second["inherited"]) == (False, False)
    assert (first["opened_here"], second["opened_here"]) == (1, 2)


def test_with_conn_max_age_a_child_keeps_its_connection_between_tasks_until_one_fails(
        project: Path, start_worker: StartWorker) -> None:
    # Given persistent connections (CONN_MAX_AGE = 60 s)
    start_worker("-c", "1", env=clean_env(DJANGO_SETTINGS_MODULE="proj.settings_probe", PROBE_CONN_MAX_AGE="60"))
    client = probe_client(project)

    # When two tasks run, then one that fails after a query, then another
    first, second = report(client), report(client)
    with pytest.raises(RuntimeError, match="failed after a query"):
        client.send("proj.fail_after_query").get(timeout=RESULT_TIMEOUT_S)
    after_failure = report(client)

    # Then the second reused the first's connection; the failure closed it, so the last opened a new one
    assert [r["opened_here"] for r in (first, second, after_failure)] == [1, 1, 2]
    assert not any(r["inherited"] for r in (first, second, after_failure))
