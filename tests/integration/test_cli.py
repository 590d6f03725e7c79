"""``taskfleet call | queues | purge | dead-letters`` as a person and a script use them: real subprocesses on the
embedded SQLite broker (no server needed), with a real worker where a task must run.

Scripts get stdin, stdout and stderr as pipes; a person gets a pseudo-terminal (``in_terminal``), where the CLI
asks before deleting anything and shows a spinner while it waits.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from taskfleet.brokers import Broker, connect
from taskfleet.message import Message
from taskfleet.serializers import JSON, get_serializer
from taskfleet.settings import BrokerSettings
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CLI_TIMEOUT_S = 30.0
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass(frozen=True)
class Urls:
    broker: str
    backend: str

    def flags(self) -> list[str]:
        return ["--broker", self.broker]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKFLEET_")}
    return {**env, "COLUMNS": "160", "PYTHONUNBUFFERED": "1"}


def taskfleet(*args: str, stdin: str | None = None, pythonpath: Path | None = None
              ) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a script does: pipes everywhere (stdin empty unless given); ``pythonpath`` to import from."""
    env = _env() if pythonpath is None else {**_env(), "PYTHONPATH": str(pythonpath)}
    return subprocess.run([sys.executable, "-m", "taskfleet", *args], cwd=REPO, env=env, text=True,
                          input=stdin or "", capture_output=True, timeout=CLI_TIMEOUT_S, check=False)


def in_terminal(*args: str, answer: str | None = None) -> tuple[int, str]:
    """Run the CLI as a person does, on a pseudo-terminal; type ``answer`` (and Enter) when it asks. Returns the
    exit status and everything the terminal showed, without colours and cursor moves."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "taskfleet", *args], cwd=REPO, env={**_env(), "TERM": "xterm"},
                            stdin=secondary, stdout=secondary, stderr=secondary, close_fds=True)
    os.close(secondary)
    shown, answered = b"", answer is None
    deadline = time.monotonic() + CLI_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            if not select.select([primary], [], [], 0.1)[0]:
                continue
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # the CLI exited and closed the terminal
                break
            if not chunk:
                break
            shown += chunk
            if not answered and b"[y/n]" in shown:
                os.write(primary, f"{answer}\r".encode())
                answered = True
        return proc.wait(timeout=CLI_TIMEOUT_S), ANSI_ESCAPE.sub("", shown.decode("utf-8", "replace"))
    finally:
        os.close(primary)
        if proc.poll() is None:
            proc.kill()


def queue_counts(urls: Urls) -> dict[str, dict[str, object]]:
    result = taskfleet("queues", "--json", *urls.flags())
    assert result.returncode == 0, result.stderr
    counts: dict[str, dict[str, object]] = json.loads(result.stdout)
    return counts


@pytest.fixture
def urls(tmp_path: Path) -> Urls:
    """A fresh broker and result backend for one test."""
    return Urls(broker=f"sqlite:///{tmp_path / 'broker.db'}", backend=f"sqlite:///{tmp_path / 'results.db'}")


@pytest.fixture
def broker(urls: Urls) -> Iterator[Broker]:
    """The test's broker, opened in the test process (to make dead letters)."""
    opened = connect(BrokerSettings(url=urls.broker))
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def worked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Urls]:
    """A broker and backend with a worker running ``tests.tasks`` on queue ``tests``, shared by the module's
    ``--wait`` tests (starting a worker is the slow part)."""
    directory = tmp_path_factory.mktemp("cli-worker")
    urls = Urls(broker=f"sqlite:///{directory / 'broker.db'}", backend=f"sqlite:///{directory / 'results.db'}")
    worker = WorkerProcess(broker=urls.broker, backend=urls.backend, concurrency=1).wait_started()
    yield urls
    worker.stop()


GARBAGE = b"not a message"


def _dead_letter(broker: Broker, data: bytes, reason: str, *, queue: str = "billing", message_id: str) -> str:
    broker.enqueue(queue, message_id, data)
    (delivery,) = broker.fetch([queue], max_messages=1, timeout_s=1.0)
    broker.dead_letter(delivery, reason)
    return message_id


def _charge() -> bytes:
    """The bytes of a ``billing.charge(42, currency="EUR")`` message, as a caller sends them."""
    message = Message(id="task-1", task="billing.charge", args=(42,), kwargs={"currency": "EUR"}, queue="billing")
    return message.encode(get_serializer(JSON))


# -- call ----------------------------------------------------------------------------------------------------------

def test_call_without_wait_prints_the_task_id_and_the_message_waits_in_its_queue(urls: Urls) -> None:
    result = taskfleet("call", "tests.add", "--args", "[1, 2]", "-Q", "tests", *urls.flags())

    assert result.returncode == 0, result.stderr
    task_id = result.stdout.strip()
    assert len(task_id) == 32
    assert queue_counts(urls)["tests"]["ready"] == 1


def test_call_with_wait_prints_the_id_then_the_result(worked: Urls) -> None:
    result = taskfleet("call", "tests.add", "--args", "[40, 2]", "-Q", "tests", "--wait", *worked.flags(),
                       "--result-backend", worked.backend)

    assert result.returncode == 0, result.stderr
    task_id, value = result.stdout.splitlines()
    assert len(task_id) == 32
    assert json.loads(value) == 42
    assert result.stderr == ""  # no spinner without a terminal


def test_call_with_wait_and_json_prints_one_json_object(worked: Urls) -> None:
    result = taskfleet("call", "tests.add", "--args", "[1, 1]", "--kwargs", "{}", "-Q", "tests", "--wait", "--json",
                       *worked.flags(), "--result-backend", worked.backend)

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report == {"id": report["id"], "state": "SUCCESS", "result": 2, "error": None}


def test_a_failing_task_exits_1_with_its_error_type_and_message(worked: Urls) -> None:
    result = taskfleet("call", "tests.fail", "--args", '["card declined"]', "-Q", "tests", "--wait",
                       *worked.flags(), "--result-backend", worked.backend)

    assert result.returncode == 1
    assert "failed: ValueError: card declined" in result.stderr
    assert "Traceback" in result.stderr  # the remote one


def test_a_failing_task_with_json_reports_the_error_in_the_object(worked: Urls) -> None:
    result = taskfleet("call", "tests.fail", "--args", '["nope"]', "-Q", "tests", "--wait", "--json",
                       *worked.flags(), "--result-backend", worked.backend)

    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert (report["state"], report["result"]) == ("FAILURE", None)
    assert (report["error"]["type"], report["error"]["message"]) == ("ValueError", "nope")


def test_a_wait_that_times_out_says_so_and_exits_124(urls: Urls) -> None:
    # Given no worker consumes the queue
    result = taskfleet("call", "tests.add", "--args", "[1, 2]", "-Q", "nobody-home", "--wait", "--timeout", "0.5",
                       *urls.flags(), "--result-backend", urls.backend)

    assert result.returncode == 124
    assert result.stdout.strip()  # the id, so the task can be looked up later
    assert "timed out after 0.5s" in result.stderr
    assert "is one consuming queue 'nobody-home'?" in result.stderr


def test_wait_without_a_result_backend_is_refused_before_anything_is_sent(urls: Urls) -> None:
    result = taskfleet("call", "tests.add", "--wait", "-Q", "tests", *urls.flags())

    assert result.returncode == 1
    assert "--wait needs a result backend" in result.stderr
    assert "tests" not in queue_counts(urls)


def test_arguments_that_are_not_a_json_list_are_refused(urls: Urls) -> None:
    result = taskfleet("call", "tests.add", "--args", '{"x": 1}', *urls.flags())

    assert result.returncode == 1
    assert "--args must be a JSON list" in result.stderr


def test_on_a_terminal_wait_shows_a_spinner_then_the_result(worked: Urls, tmp_path: Path) -> None:
    code, shown = in_terminal("call", "tests.slow_record", "--args", json.dumps([str(tmp_path / "m"), 0.6]),
                              "-Q", "tests", "--wait", *worked.flags(), "--result-backend", worked.backend)

    assert code == 0, shown
    assert "waiting for tests.slow_record [" in shown
    assert '"done"' in shown
    assert "succeeded in" in shown


# -- queues --------------------------------------------------------------------------------------------------------

def test_queues_on_an_empty_broker_says_there_are_none_yet(urls: Urls) -> None:
    result = taskfleet("queues", *urls.flags())

    assert result.returncode == 0
    assert result.stdout.startswith("no queues yet")


def test_queues_shows_a_row_per_queue_with_its_counts(urls: Urls, broker: Broker) -> None:
    broker.enqueue("emails", "a", b"x")
    broker.enqueue("emails", "b", b"x", delay_s=60)
    _dead_letter(broker, b"y", "bad", queue="emails", message_id="c")

    result = taskfleet("queues", *urls.flags())

    assert result.returncode == 0, result.stderr
    header, _rule, row = result.stdout.splitlines()
    assert header.split() == ["QUEUE", "READY", "IN-FLIGHT", "DELAYED", "DEAD", "DUE"]
    assert row.split() == ["emails", "1", "0", "1", "1", "0"]


def test_queues_json_gives_every_count_and_whether_it_is_known(urls: Urls, broker: Broker) -> None:
    broker.enqueue("emails", "a", b"x")

    assert queue_counts(urls) == {"emails": {"ready": 1, "in_flight": 0, "delayed": 0, "dead": 0, "due": 0,
                                             "in_flight_known": True, "delayed_known": True}}


# -- purge ---------------------------------------------------------------------------------------------------------

def test_purge_without_yes_and_without_a_terminal_refuses_and_deletes_nothing(urls: Urls, broker: Broker) -> None:
    broker.enqueue("emails", "a", b"x")

    result = taskfleet("purge", "emails", *urls.flags())

    assert result.returncode == 1
    assert "stdin is not a terminal" in result.stderr
    assert "pass --yes" in result.stderr
    assert queue_counts(urls)["emails"]["ready"] == 1


def test_purge_with_yes_deletes_ready_and_delayed_messages(urls: Urls, broker: Broker) -> None:
    broker.enqueue("emails", "a", b"x")
    broker.enqueue("emails", "b", b"x", delay_s=60)

    result = taskfleet("purge", "emails", "--yes", *urls.flags())

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "purged 2 messages from emails"
    assert queue_counts(urls)["emails"]["ready"] == 0


def test_on_a_terminal_purge_asks_with_the_counts_and_a_no_keeps_everything(urls: Urls, broker: Broker) -> None:
    broker.enqueue("emails", "a", b"x")
    broker.enqueue("emails", "b", b"x")

    code, shown = in_terminal("purge", "emails", *urls.flags(), answer="n")

    assert code == 1
    assert "Delete 2 ready messages and 0 delayed messages of queue emails?" in shown
    assert "aborted: nothing deleted" in shown
    assert queue_counts(urls)["emails"]["ready"] == 2


# -- dead-letters --------------------------------------------------------------------------------------------------

def test_dead_letters_lists_each_with_its_task_arguments_and_reason(urls: Urls, broker: Broker) -> None:
    message_id = _dead_letter(broker, _charge(), "task 'billing.charge' is not registered", message_id="task-1")
    _dead_letter(broker, GARBAGE, "malformed message", message_id="junk")

    result = taskfleet("dead-letters", "billing", *urls.flags())

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "DEAD", "AT", "TASK", "REASON"]
    assert message_id in lines[2]
    assert 'billing.charge(42, currency="EUR")' in lines[2]
    assert "task 'billing.charge' is not registered" in lines[2]
    assert f"<undecodable: {len(GARBAGE)} bytes>" in lines[3]


def test_dead_letters_json_decodes_what_it_can(urls: Urls, broker: Broker) -> None:
    _dead_letter(broker, _charge(), "declined", message_id="task-1")
    _dead_letter(broker, GARBAGE, "malformed message", message_id="junk")

    result = taskfleet("dead-letters", "billing", "--json", *urls.flags())

    assert result.returncode == 0, result.stderr
    charge, garbage = json.loads(result.stdout)
    assert (charge["task"], charge["task_id"], charge["args"], charge["kwargs"], charge["reason"]) == (
        "billing.charge", "task-1", [42], {"currency": "EUR"}, "declined")
    assert garbage["task"] is None
    assert (garbage["decode_error"], garbage["bytes"]) == (f"<undecodable: {len(GARBAGE)} bytes>", len(GARBAGE))


def test_requeue_with_yes_moves_dead_letters_back_to_ready(urls: Urls, broker: Broker) -> None:
    _dead_letter(broker, _charge(), "declined", message_id="task-1")

    result = taskfleet("dead-letters", "billing", "--requeue", "--yes", *urls.flags())

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "requeued 1 message to billing"
    counts = queue_counts(urls)["billing"]
    assert (counts["ready"], counts["dead"]) == (1, 0)


def test_requeue_by_id_moves_only_that_dead_letter(urls: Urls, broker: Broker) -> None:
    keep = _dead_letter(broker, GARBAGE, "malformed message", message_id="junk")
    move = _dead_letter(broker, _charge(), "declined", message_id="task-1")

    result = taskfleet("dead-letters", "billing", "--requeue", "--id", move, "--yes", "--json", *urls.flags())

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"queue": "billing", "requeued": 1}
    assert [letter.message_id for letter in broker.dead_letters("billing")] == [keep]


def test_requeue_without_yes_and_without_a_terminal_refuses_and_moves_nothing(urls: Urls, broker: Broker) -> None:
    _dead_letter(broker, GARBAGE, "malformed message", message_id="junk")

    result = taskfleet("dead-letters", "billing", "--requeue", *urls.flags())

    assert result.returncode == 1
    assert "stdin is not a terminal" in result.stderr
    assert queue_counts(urls)["billing"]["dead"] == 1


def test_on_a_terminal_requeue_shows_what_it_will_move_and_a_yes_moves_it(urls: Urls, broker: Broker) -> None:
    _dead_letter(broker, _charge(), "declined", message_id="task-1")

    code, shown = in_terminal("dead-letters", "billing", "--requeue", *urls.flags(), answer="y")

    assert code == 0, shown
    assert 'billing.charge(42, currency="EUR")' in shown
    assert "Requeue all dead letters of queue billing to ready?" in shown
    assert "requeued 1 message to billing" in shown
    assert broker.dead_letters("billing") == []


# -- packaging -----------------------------------------------------------------------------------------------------

def test_dash_a_gives_call_queues_and_purge_the_apps_settings(tmp_path: Path) -> None:
    # Given an app whose settings name its broker and its default queue
    (tmp_path / "cli_app_module.py").write_text(
        "from taskfleet import App\n"
        f"app = App('shop', broker='sqlite:///{tmp_path / 'broker.db'}', default_queue='shop',\n"
        "          task_routes={'shop.urgent_*': {'queue': 'urgent', 'priority': 9}})\n")
    # When a task is sent by name with -A and no other flag, then it waits in the app's default queue
    sent = taskfleet("call", "-A", "cli_app_module:app", "shop.restock", "--args", "[3]", pythonpath=tmp_path)
    assert sent.returncode == 0, sent.stderr
    # And one its routes name goes where they say
    routed = taskfleet("call", "-A", "cli_app_module:app", "shop.urgent_refund", pythonpath=tmp_path)
    assert routed.returncode == 0, routed.stderr
    listed = taskfleet("queues", "-A", "cli_app_module", "--json", pythonpath=tmp_path)
    assert json.loads(listed.stdout)["shop"]["ready"] == 1, listed.stderr
    assert json.loads(listed.stdout)["urgent"]["ready"] == 1
    purged = taskfleet("purge", "-A", "cli_app_module", "shop", "--yes", pythonpath=tmp_path)
    assert purged.returncode == 0, purged.stderr
    assert json.loads(taskfleet("queues", "-A", "cli_app_module", "--json", pythonpath=tmp_path).stdout)[
        "shop"]["ready"] == 0


def test_dash_a_naming_what_cannot_be_loaded_fails_with_the_reason(tmp_path: Path) -> None:
    result = taskfleet("queues", "-A", "no_such_app_module")
    assert result.returncode == 1
    assert "cannot import 'no_such_app_module': ModuleNotFoundError" in result.stderr


# -- check ---------------------------------------------------------------------------------------------------------

CHECKED_SETTINGS = """
TASKFLEET_BROKER_URL = "redis://:s3cret@redis.example:6379/0"
TASKFLEET_DEFAULT_QUEUE = "shop"
TASKFLEET_BEAT_SCHEDULE = {"nightly": {"task": "shop.elsewhere", "schedule": 3600}}
TASKFLEET_TASK_ROUTES = {"shop.restock": "stock", "shop.restok": "stock"}
CELERY_BROKER_URL = "redis://:s3cret@redis.example:6379/1"
CELERY_TASK_ACKS_LATE = True
"""


def test_check_prints_the_masked_configuration_tasks_celery_settings_and_problems(tmp_path: Path) -> None:
    # Given a project whose settings module still holds Celery settings and whose schedule names a foreign task
    (tmp_path / "shop_settings.py").write_text(CHECKED_SETTINGS)
    (tmp_path / "shop_app.py").write_text(
        "from taskfleet import App\napp = App('shop')\napp.config_from_object('shop_settings')\n"
        "@app.task\ndef restock() -> None: ...\n")
    # When it is checked
    result = taskfleet("check", "-A", "shop_app", pythonpath=tmp_path)
    # Then it loads, and the report names everything a person moving over needs, with no password in it
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "s3cret" not in out
    assert "broker_url" in out
    assert "redis://:***@redis.example:6379/0" in out
    assert "shop.restock" in out
    assert "CELERY_BROKER_URL [shop_settings]: use TASKFLEET_BROKER_URL" in out
    assert "CELERY_TASK_ACKS_LATE [shop_settings]: Taskfleet has no equivalent (always" in out
    assert "beat entry 'nightly' sends 'shop.elsewhere', which no task module of app 'shop' registers" in out
    assert "task_routes names 'shop.restok', which no task module of app 'shop' registers" in out
    assert "'shop.restock', which" not in out
    as_json = json.loads(taskfleet("check", "-A", "shop_app", "--json", pythonpath=tmp_path).stdout)
    assert as_json["ok"]
    assert as_json["settings"]["default_queue"] == "shop"


def test_check_fails_on_a_setting_that_is_not_ours(tmp_path: Path) -> None:
    (tmp_path / "typo_app.py").write_text(
        "from taskfleet import App\napp = App('typo')\napp.config_from_object({'TASKFLEET_BROKER': 'memory://'})\n")
    result = taskfleet("check", "-A", "typo_app", pythonpath=tmp_path)
    assert result.returncode == 1
    assert "TASKFLEET_BROKER is not a Taskfleet setting (did you mean TASKFLEET_BROKER_URL?)" in result.stdout


def test_the_console_script_loads_the_broker_command_handlers_only_when_one_runs() -> None:
    # Given the module every `taskfleet worker` process imports first (the same console script)
    probe = ("import sys, taskfleet.cli; loaded = {'taskfleet.cli.console', 'rich.progress', 'rich.prompt'} & "
             "set(sys.modules); sys.exit(', '.join(sorted(loaded)) or None)")

    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True,
                            check=False)

    assert result.returncode == 0, f"loaded at import: {result.stderr}"
