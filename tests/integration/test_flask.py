"""The Flask integration with a real Flask app and a real ``taskfleet worker``: a route enqueues a task through Flask's
test client, the worker runs it inside its own Flask app context, and the result says so.

Two shapes: the application factory (``Taskfleet()`` then ``init_app``) is examples/08-flask, run as its README says
in a copy of its folder; ``Taskfleet(flask_app)`` is tests/flask_single.py, driven from this process.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from taskfleet import App
from tests.support.workers import LoggedWorkers, WorkerProcess

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "08-flask"
#: The console script of this virtualenv: what `taskfleet ...` in the README runs.
TASKFLEET = str(Path(sys.executable).with_name("taskfleet"))
WORKER_COMMAND = "taskfleet worker -A worker:app -c 2"
START_TIMEOUT_S = 15.0
SEND_TIMEOUT_S = 40.0
STOP_TIMEOUT_S = 15.0
RESULT_TIMEOUT_S = 20.0
#: The lines of the README's expected output that are the same on every run (the first carries the task id).
README_OUTPUT = [
    "GET  /tasks/<task id> -> SUCCESS 'Hello, Ada! (from the Flask app web)'",
    "greet('Grace')        -> 'Hello, Grace! (from the Flask app web)'  (a direct call, here, in the app context too)",
]
FIRST_LINE = re.compile(r"POST /greet/Ada {7}-> 202, task id [0-9a-f]{8}\.\.\.")


def example_env(**extra: str) -> dict[str, str]:
    """This environment without the developer's TASKFLEET_* and FLASK_* settings; a free health port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKFLEET_", "FLASK_"))}
    return {**env, "TASKFLEET_HEALTH_PORT": "0", "PYTHONUNBUFFERED": "1", **extra}


StartExampleWorker = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def example_dir(tmp_path: Path) -> Path:
    """A copy of examples/08-flask without state from earlier runs (its SQLite file)."""
    return Path(shutil.copytree(EXAMPLE, tmp_path / "08-flask",
                                ignore=shutil.ignore_patterns("taskfleet.db*", "__pycache__")))


@pytest.fixture
def start_example_worker(example_dir: Path) -> Iterator[StartExampleWorker]:
    """Factory: ``start(**env)`` runs the README's worker command in the example's folder with ``env`` added, and
    waits until it says it started; it is stopped with SIGTERM at the end, and its log printed."""
    workers = LoggedWorkers(example_dir, start_timeout_s=START_TIMEOUT_S, stop_timeout_s=STOP_TIMEOUT_S)

    def start(**env: str) -> subprocess.Popen[bytes]:
        return workers.start([TASKFLEET, *WORKER_COMMAND.split()[1:]], example_env(**env))

    yield start
    workers.stop_all()


def run_send(example_dir: Path, **env: str) -> list[str]:
    done = subprocess.run([sys.executable, "send.py"], cwd=example_dir, env=example_env(**env), capture_output=True,
                          text=True, timeout=SEND_TIMEOUT_S, check=False)
    assert done.returncode == 0, f"exit code {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout.splitlines()


# -- the application factory: examples/08-flask ------------------------------------------------------------------------


def test_the_readme_shows_the_commands_and_the_output_this_suite_checks() -> None:
    readme = (EXAMPLE / "README.md").read_text(encoding="utf-8").splitlines()

    assert any(line.startswith(WORKER_COMMAND) for line in readme)
    assert any(line.startswith("python send.py") for line in readme)
    assert any(FIRST_LINE.fullmatch(line) for line in readme)
    for line in README_OUTPUT:
        assert line in readme, f"the README does not show the output line {line!r}"


def code_lines(text: str) -> set[str]:
    """The lines of Python code in ``text``, stripped, without comments (docs/flask.md may comment differently)."""
    return {line.split("  #")[0].strip() for line in text.splitlines()} - {""}


def test_the_setup_in_docs_flask_md_is_the_example_s_code() -> None:
    doc = (EXAMPLE.parents[1] / "docs" / "flask.md").read_text(encoding="utf-8")
    factory = doc.split("## A complete setup with an application factory")[1].split("\n## ")[0]
    snippets = re.findall(r"```python\n(.*?)```", factory, re.S)
    example = code_lines("\n".join(p.read_text(encoding="utf-8") for p in [*EXAMPLE.glob("web/*.py"),
                                                                            EXAMPLE / "worker.py"]))

    assert len(snippets) == 5
    for snippet in snippets:
        assert code_lines(snippet) <= example, f"docs/flask.md shows code examples/08-flask does not have: " \
                                               f"{sorted(code_lines(snippet) - example)}"


def test_a_route_enqueues_a_task_that_the_worker_runs_in_its_flask_app_context_as_the_readme_says(
        example_dir: Path, start_example_worker: StartExampleWorker) -> None:
    # Given the example's worker, on its embedded SQLite broker
    start_example_worker()

    # When send.py POSTs through the test client and polls the task's route
    output = run_send(example_dir)

    # Then the task read the Flask config through current_app, in the worker
    assert FIRST_LINE.fullmatch(output[0]), output
    assert output[1:] == README_OUTPUT


@pytest.mark.parametrize("broker_kind", ["redis", "rabbitmq"], indirect=True)
def test_the_task_reads_the_config_of_the_workers_own_flask_app_on_the_broker_the_environment_names(
        broker_kind: object, broker_url: str, example_dir: Path, start_example_worker: StartExampleWorker) -> None:
    # Given a worker whose Flask app greets in French (FLASK_GREETING, Flask's from_prefixed_env), on a real broker
    start_example_worker(TASKFLEET_BROKER_URL=broker_url, FLASK_GREETING="Bonjour")

    # When the web side (greeting in English) sends the task
    output = run_send(example_dir, TASKFLEET_BROKER_URL=broker_url)

    # Then it ran in the worker's Flask app context, and a direct call in the web side's
    assert output[1] == "GET  /tasks/<task id> -> SUCCESS 'Bonjour, Ada! (from the Flask app web)'", output
    assert output[2] == README_OUTPUT[1], output


# -- Taskfleet(flask_app): tests/flask_single.py -----------------------------------------------------------------------


@pytest.fixture
def single_app(broker_url: str, backend_url: str) -> Iterator[App]:
    """The App of tests/flask_single.py, pointed at the test's broker and result backend."""
    from tests import flask_single

    flask_single.taskfleet.app.configure(broker=broker_url, result_backend=backend_url)
    yield flask_single.taskfleet.app
    flask_single.taskfleet.app.close()


def test_a_one_module_app_sends_from_a_route_and_its_task_runs_in_a_fresh_app_context_on_the_worker(
        single_app: App, start_worker: Callable[..., WorkerProcess]) -> None:
    from tests import flask_single

    # Given a worker that loads the extension's App by a dotted attribute path
    start_worker(app="tests.flask_single:taskfleet.app", queues="tests")
    client = flask_single.flask_app.test_client()

    # When a route sends the task
    response = client.post("/describe/Ada")
    assert response.status_code == 202
    body: dict[str, Any] = response.get_json()

    # Then the worker ran it in an app context of the Flask app (no request context: it is not a request)
    result = single_app.AsyncResult(body["task_id"]).get(timeout=RESULT_TIMEOUT_S)
    assert result == {"app": "tests.flask_single", "greeting": "Hello from the worker's Flask app, Ada", "g": "Ada",
                      "in_request": False}
