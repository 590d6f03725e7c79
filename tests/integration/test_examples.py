"""The examples do what their READMEs say: ``make demo``'s module on the embedded SQLite broker, and on Redis and
RabbitMQ through ``TASKFLEET_BROKER_URL``; examples 01-04 run with the README's commands, in a copy of the
example's folder (so each run starts with a fresh ``taskfleet.db``).

Each README must show the commands run here and the output lines asserted here, so the two cannot drift apart.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.waiting import wait_for
from tests.support.workers import terminate

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
#: The console script of this virtualenv: what `taskfleet ...` in a README runs.
TASKFLEET = str(Path(sys.executable).with_name("taskfleet"))
DEMO_TIMEOUT_S = 60.0
PRODUCER_TIMEOUT_S = 30.0
WORKER_START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0

#: What each example's README tells the reader to run (after `cd examples/<example>`).
COMMANDS = {
    "01-quickstart": ["taskfleet worker -A tasks:app -c 2", "python send.py"],
    "02-retries-and-time-limits": ["taskfleet worker -A tasks:app -c 2", "python send.py",
                                   "taskfleet dead-letters default --broker sqlite:///taskfleet.db"],
    "03-periodic-tasks": ["taskfleet beat -A tasks:app --list", "taskfleet worker -A tasks:app -c 2 --beat",
                          "taskfleet beat -A tasks:app", "python watch.py"],
    "04-routing-and-priorities": ["taskfleet worker -A tasks:app -Q emails -c 2",
                                  "taskfleet worker -A tasks:app -Q reports -c 1", "python send.py"],
    "06-workflows": ["taskfleet worker -A tasks:app -c 2", "python send.py"],
}
#: Output lines that are the same on every run: the README's expected output shows each of them.
STABLE_OUTPUT = {
    "01-quickstart": [
        "top_words.delay(TEXT)           -> [['the', 4], ['fox', 2], ['dog', 2]]",
        "app.send('quickstart.add', ...) -> 42",
        "100 x add.delay(i, i)           -> sum 9900",
        "add(1, 1)                       -> 2  (a direct call runs here, not on the worker)",
    ],
    "02-retries-and-time-limits": [
        "fetch_rates('EUR')         SUCCESS  'EUR rates fetched on attempt 3'",
        "sync_inventory('berlin')   FAILURE  ConnectionError: inventory API of berlin is down",
        "call_stuck_api()           FAILURE  TimeLimitExceeded: retries.call_stuck_api exceeded its time limit after "
        "1.0s; its child was killed",
    ],
    "03-periodic-tasks": ["3 ticks, 1 s apart, each sent once"],
    "04-routing-and-priorities": [
        "routing: each task runs on a worker that consumes its queue",
        "  emails ran on worker 1 only",
        "  reports ran on worker 2 only",
        "priorities: 4 reports at priority 0, then 1 at priority 9, while the reports worker is busy",
        "  run order: slow, urgent, normal-1, normal-2, normal-3, normal-4",
    ],
    "06-workflows": [
        'add.s(2, 2) | mul.s(10) | add.s(1)                 -> 41',
        '  .parent.get(), .parent.parent.get()              -> (40, 4)',
        'group(add.s(i, i) for i in range(5))               -> [0, 2, 4, 6, 8]',
        'chord(mul.s(i, i) for i in range(10))(total.s())   -> 285',
        'add.starmap([(1, 2), (3, 4)])                      -> [3, 7]',
        'add.chunks(zip(range(6), range(6)), 2)             -> [[0, 2], [4, 6], [8, 10]]',
        'add.apply_async((1, 1), link=log_result.s())       -> 2',
        '  callback got 2',
        '(check_stock.s(\'plum\') | add.s(1)).get()           -> raises KeyError: "unknown product \'plum\'"',
        '  errback: workflows.check_stock failed with KeyError: "unknown product \'plum\'"',
        'import_rows.delay(3).get(on_message=...)           -> 3 rows; progress seen: 1/3, 2/3, 3/3',
    ],
}


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the developer's TASKFLEET_* settings; a free health port for every worker (in a
    container only the first would serve the default 8000)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKFLEET_")}
    return {**env, "TASKFLEET_HEALTH_PORT": "0", "PYTHONUNBUFFERED": "1", **extra}


def run(command: list[str], cwd: Path, timeout_s: float, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=env or clean_env(), capture_output=True, text=True,
                          timeout=timeout_s, check=False)


def lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    assert done.returncode == 0, f"exit code {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout.splitlines()


# -- make demo ---------------------------------------------------------------------------------------------------------


def run_demo(**env: str) -> list[str]:
    done = run([sys.executable, "-m", "examples.demo"], ROOT, DEMO_TIMEOUT_S, clean_env(**env))
    print(done.stdout)  # the closing note pastes it (pytest -s)
    return lines(done)


def assert_demo_passed(output: list[str]) -> None:
    text = "\n".join(output)
    assert re.search(r"^38/38 tasks as expected in [\d.]+s; worker drained on SIGTERM in [\d.]+s and exited with "
                     r"code 0$", text, re.M), text
    assert output[-1] == "demo passed"
    for task, count, result in [("add", 30, "✓ 0, 3, 6 ... 87"), ("resize_image", 4, "✓ beach-640w.jpg, ..."),
                                ("flaky_charge", 1, "✓ 'charged 42 after 1 retry'"),
                                ("send_reminder", 1, "✓ ran "),  # the demo itself checks it waited out its countdown
                                ("heartbeat", 2, "✓ ticks at ")]:
        row = [line for line in output if re.match(rf"^│ {task} +│", line)]
        assert row, f"no row for {task}:\n{text}"
        cells = [cell.strip() for cell in row[0].strip("│").split("│")]
        assert cells[0] == task
        assert int(cells[1]) >= count
        assert cells[2] == "SUCCESS"
        assert cells[3].startswith(result), cells


def test_the_demo_runs_end_to_end_on_a_fresh_sqlite_file_when_no_broker_is_set() -> None:
    output = run_demo()

    assert_demo_passed(output)
    broker = re.search(r"^  broker:  (sqlite:////\S+/taskfleet\.db) \(the embedded SQLite broker, a fresh file\)$",
                       "\n".join(output), re.M)
    assert broker, output
    assert "  results: the same" in output
    assert not Path(broker[1].removeprefix("sqlite:///")).parent.exists(), "a passing run removes its directory"
    for done in ("add: 30 done", "resize_image: 4 done", "flaky_charge: 1 done", "send_reminder: 1 done",
                 "heartbeat: 2 done"):
        assert any(line.endswith(done) for line in output), f"no progress line {done!r} without a terminal"


@pytest.mark.parametrize("broker_kind", ["redis", "rabbitmq"], indirect=True)
def test_the_demo_runs_on_the_broker_that_taskfleet_broker_url_names(broker_kind: object, broker_url: str) -> None:
    output = run_demo(TASKFLEET_BROKER_URL=broker_url)

    assert_demo_passed(output)
    scheme = broker_url.split("://")[0]
    assert any(line.startswith("  broker:  ") and line.endswith(f"({scheme}, from TASKFLEET_BROKER_URL)")
               for line in output), output
    results = next(line for line in output if line.startswith("  results: "))
    if scheme == "redis":
        assert results == "  results: the same"
    else:  # RabbitMQ stores no results: they go to the demo's SQLite file
        assert re.fullmatch(r"  results: sqlite:////\S+/taskfleet\.db", results), results


# -- 01-04 -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("example", sorted(COMMANDS))
def test_the_readme_shows_the_commands_and_the_output_this_suite_checks(example: str) -> None:
    readme = (EXAMPLES / example / "README.md").read_text(encoding="utf-8")

    for command in COMMANDS[example]:
        assert command in readme, f"{example}/README.md does not show `{command}`"
    for line in STABLE_OUTPUT[example]:
        assert line in readme.splitlines(), f"{example}/README.md does not show the output line {line!r}"


StartWorker = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def example_dir(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A copy of the example named by the test's ``example`` parameter, without any state from earlier runs."""
    name: str = request.param
    return Path(shutil.copytree(EXAMPLES / name, tmp_path / name,
                                ignore=shutil.ignore_patterns("taskfleet.db*", "ticks.log", "events.log",
                                                              "__pycache__")))


@pytest.fixture
def start(example_dir: Path) -> Iterator[StartWorker]:
    """Factory: ``start("worker", "-A", "tasks:app", ...)`` runs ``taskfleet ...`` in the example's folder and waits
    until a worker says it started (a beat replica, until it says so); all are stopped with SIGTERM at the end,
    and their logs are printed when the test fails."""
    started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start_one(*args: str) -> subprocess.Popen[bytes]:
        log = example_dir / f"process-{len(started) + 1}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([TASKFLEET, *args], cwd=example_dir, env=clean_env(), stdout=out,
                                    stderr=subprocess.STDOUT)
        started.append((proc, log))
        marker = "worker starting" if args[0] == "worker" else "beat starting"
        wait_for(lambda: proc.poll() is not None or marker in log.read_text(errors="replace"),
                 WORKER_START_TIMEOUT_S, message=f"`taskfleet {' '.join(args)}` did not start")
        assert proc.poll() is None, f"`taskfleet {' '.join(args)}` exited:\n{log.read_text(errors='replace')}"
        return proc

    yield start_one
    for proc, log in started:
        terminate(proc, STOP_TIMEOUT_S)
        print(f"--- {log.name} (exit code {proc.returncode}):\n{log.read_text(errors='replace')[-3000:]}")


@pytest.mark.parametrize("example_dir", ["01-quickstart"], indirect=True)
def test_01_quickstart_calls_tasks_on_a_worker_and_in_process(example_dir: Path, start: StartWorker) -> None:
    start("worker", "-A", "tasks:app", "-c", "2")

    output = lines(run([sys.executable, "send.py"], example_dir, PRODUCER_TIMEOUT_S))

    assert re.fullmatch(r"add\.delay\(2, 3\) +-> 5  \(task id [0-9a-f]{8}\.\.\.\)", output[0]), output
    assert output[1:] == STABLE_OUTPUT["01-quickstart"]
    assert (example_dir / "taskfleet.db").exists(), "the embedded broker is a file in the example's folder"


@pytest.mark.parametrize("example_dir", ["02-retries-and-time-limits"], indirect=True)
def test_02_retries_back_off_run_out_into_a_dead_letter_and_time_limits_stop_tasks(
        example_dir: Path, start: StartWorker) -> None:
    start("worker", "-A", "tasks:app", "-c", "2")

    output = lines(run([sys.executable, "send.py"], example_dir, PRODUCER_TIMEOUT_S))

    assert [output[0], output[1], output[3]] == STABLE_OUTPUT["02-retries-and-time-limits"]
    soft = re.fullmatch(r"build_thumbnails\(20\) {7}SUCCESS  'stopped by the soft time limit after (\d+) of 20 "
                        r"thumbnails'", output[2])
    assert soft, output[2]
    assert 1 <= int(soft[1]) <= 3, "0.3 s per thumbnail: about 3 fit in the 1 s soft limit"

    listed = run([TASKFLEET, "dead-letters", "default", "--broker", "sqlite:///taskfleet.db", "--json"], example_dir,
                 PRODUCER_TIMEOUT_S)
    dead = json.loads("\n".join(lines(listed)))
    assert [(d["task"], d["args"]) for d in dead] == [("retries.sync_inventory", ["berlin"])]
    assert dead[0]["reason"].startswith("max retries (2) exceeded: ConnectionError: inventory API of berlin is down")


@pytest.mark.parametrize("example_dir", ["03-periodic-tasks"], indirect=True)
def test_03_two_beat_replicas_send_each_heartbeat_once_and_list_the_schedule(
        example_dir: Path, start: StartWorker) -> None:
    schedule = lines(run([TASKFLEET, "beat", "-A", "tasks:app", "--list"], example_dir, PRODUCER_TIMEOUT_S))
    assert schedule[0] == "schedule of app 'periodic' (time zone Europe/Berlin), next 5 fire times:"
    entries = [line.split(" -> ")[0] for line in schedule if not line.startswith(" ")][1:]
    assert entries == ["heartbeat: every 1s", "weekly-report-eu: cron(0 9 * * mon)",
                       "periodic.cleanup: cron(*/15 * * * *)"]

    start("worker", "-A", "tasks:app", "-c", "2", "--beat")
    start("beat", "-A", "tasks:app")

    output = lines(run([sys.executable, "watch.py"], example_dir, PRODUCER_TIMEOUT_S))

    assert len(output) == 4, output
    assert all(re.fullmatch(r"heartbeat for the tick scheduled at \S+\+00:00", line) for line in output[:3]), output
    assert output[3] == STABLE_OUTPUT["03-periodic-tasks"][0]


@pytest.mark.parametrize("example_dir", ["04-routing-and-priorities"], indirect=True)
def test_04_each_queue_runs_on_its_own_worker_and_an_urgent_task_overtakes_queued_ones(
        example_dir: Path, start: StartWorker) -> None:
    emails = start("worker", "-A", "tasks:app", "-Q", "emails", "-c", "2")
    reports = start("worker", "-A", "tasks:app", "-Q", "reports", "-c", "1")

    output = lines(run([sys.executable, "send.py"], example_dir, PRODUCER_TIMEOUT_S))

    routed = [re.fullmatch(r"  (\w+)\(.*\) +queue=(\w+) +worker \d \(pid (\d+)\)", line) for line in output[1:6]]
    assert all(routed), output
    ran_on = {(m[1], m[2], int(m[3])) for m in routed if m}
    assert ran_on == {("send_email", "emails", emails.pid), ("build_report", "reports", reports.pid)}
    assert [output[0], *output[6:]] == STABLE_OUTPUT["04-routing-and-priorities"]


@pytest.mark.parametrize("example_dir", ["06-workflows"], indirect=True)
def test_06_workflows_chain_group_chord_links_and_progress_give_what_the_readme_shows(
        example_dir: Path, start: StartWorker) -> None:
    start("worker", "-A", "tasks:app", "-c", "2")

    output = lines(run([sys.executable, "send.py"], example_dir, PRODUCER_TIMEOUT_S))

    assert output == STABLE_OUTPUT["06-workflows"]
