"""A real worker's process behaviour on every broker (``broker_kind``): crashes, signals, recycling, leases,
health, exit codes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from taskfleet import App, State
from taskfleet.worker.exitcodes import ExitCode
from tests import tasks
from tests.conftest import StartWorker
from tests.support.brokers import BrokerKind, Capability
from tests.support.waiting import wait_for
from tests.support.workers import children_of, wait_children

pytestmark = pytest.mark.integration


def _started_pids(marker: str) -> list[int]:
    return [int(line.split()[1]) for line in tasks.lines(marker) if line.startswith("start")]


def test_a_task_whose_child_is_sigkilled_mid_task_still_completes_exactly_once(
        app: App, start_worker: StartWorker, marker: str) -> None:
    worker = start_worker(concurrency=2)
    result = tasks.slow_record.delay(marker, 1.0)
    wait_for(lambda: len(_started_pids(marker)) == 1, timeout=10, message="task started")
    os.kill(_started_pids(marker)[0], signal.SIGKILL)
    assert result.get(timeout=15) == "done"
    done = [line for line in tasks.lines(marker) if line.startswith("done")]
    assert len(done) == 1, tasks.lines(marker)
    assert len(_started_pids(marker)) == 2, "delivered again after the crash"
    wait_for(lambda: len(children_of(worker.pid)) == 2, timeout=10, message="the dead child was replaced")


def test_a_healthy_task_longer_than_the_visibility_timeout_is_never_delivered_twice(
        app: App, start_worker: StartWorker, broker_kind: BrokerKind, marker: str) -> None:
    broker_kind.require(Capability.LEASES)
    # tests.tasks.app has visibility_timeout_s=2: the task runs for 5
    start_worker(concurrency=2)
    assert tasks.slow_record.delay(marker, 5.0).get(timeout=20) == "done"
    assert len(_started_pids(marker)) == 1


#: Runs ``taskfleet worker`` with ``prefetch_release_s`` (which has no flag) so long that a child never gives its
#: prefetched messages back: after a stall its background thread would otherwise race its main thread to them.
_NO_PREFETCH_RELEASE = (
    sys.executable, "-c",
    "import runpy, sys\n"
    "from taskfleet.worker.settings import WorkerSettings\n"
    "WorkerSettings.__init__.__kwdefaults__['prefetch_release_s'] = 3600.0\n"
    "sys.argv = sys.argv[3:]\n"  # -c, python, -m | taskfleet worker ...
    "runpy.run_module('taskfleet', run_name='__main__', alter_sys=True)\n",
)


def test_a_child_stopped_past_its_leases_does_not_run_the_prefetched_messages_another_worker_ran(
        app: App, start_worker: StartWorker, broker_kind: BrokerKind, marker: str, tmp_path: Path) -> None:
    broker_kind.require(Capability.LEASES)
    # Given a child that fetched a task and three more with it (queued before its worker starts) and started the first
    ledger = str(tmp_path / "ledger.txt")
    tasks.slow_record.delay(marker, 1.0)
    labels = ["p1", "p2", "p3"]
    prefetched = [tasks.record.delay(ledger, label) for label in labels]
    stalled = start_worker(concurrency=1, extra=["--prefetch", "8"], wrapper=_NO_PREFETCH_RELEASE)
    wait_for(lambda: len(_started_pids(marker)) == 1, timeout=10, message="first task started")
    [child] = _started_pids(marker)
    # When it is stopped past its leases (visibility timeout 2 s), while another worker takes them over and runs them
    os.kill(child, signal.SIGSTOP)
    try:
        start_worker(concurrency=1)
        wait_for(lambda: sorted(tasks.lines(ledger)) == labels, timeout=20,
                 message="the other worker ran the prefetched tasks")
    finally:
        os.kill(child, signal.SIGCONT)
    # And then resumes (its first task ends at once: its sleep's deadline has passed)
    wait_for(lambda: f"done {child}" in tasks.lines(marker), timeout=10, message="the stopped task finished")
    wait_for(lambda: "lease lost" in stalled.log_text() or len(tasks.lines(ledger)) > len(labels), timeout=5,
             message="the resumed child reached its prefetched messages")
    time.sleep(0.5)
    # Then it ran none of its prefetched messages again: their leases were lost
    assert Counter(tasks.lines(ledger)) == dict.fromkeys(labels, 1), tasks.lines(ledger)
    assert [r.get(timeout=10) for r in prefetched] == labels
    lost = [line for line in stalled.logs() if line.get("event") == "lease lost: prefetched message dropped unrun"]
    assert sorted(str(line["message_id"]) for line in lost) == sorted(r.id for r in prefetched)
    assert {line["level"] for line in lost} == {"warning"}


def test_sigterm_lets_running_tasks_finish_and_hands_back_unstarted_ones(
        app: App, start_worker: StartWorker, broker_kind: BrokerKind, marker: str) -> None:
    worker = start_worker(concurrency=1, extra=["--prefetch", "4"])
    running = tasks.slow_record.delay(marker, 1.5)
    waiting = [tasks.add.delay(i, i) for i in range(3)]
    wait_for(lambda: len(_started_pids(marker)) == 1, timeout=10, message="task started")
    worker.signal(signal.SIGTERM)
    assert worker.wait_exit(timeout=15) == 0
    assert running.state is State.SUCCESS, "the running task finished during the drain"
    broker_kind.expect_depth(app.broker, "tests", ready=3, in_flight=0)  # the unstarted tasks are back
    assert all(r.state is State.PENDING for r in waiting)


def test_a_drain_that_times_out_stops_the_children_and_redelivers_their_messages(
        app: App, start_worker: StartWorker, broker_kind: BrokerKind, marker: str) -> None:
    worker = start_worker(concurrency=1, extra=["--drain-timeout", "1"])
    result = tasks.slow_record.delay(marker, 30)
    wait_for(lambda: len(_started_pids(marker)) == 1, timeout=10, message="task started")
    began = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait_exit(timeout=15) == 0
    assert time.monotonic() - began < 5
    broker_kind.expect_depth(app.broker, "tests", ready=1, in_flight=0)  # ready for another worker
    start_worker(concurrency=1, extra=["--drain-timeout", "1"])
    wait_for(lambda: len(_started_pids(marker)) == 2, timeout=10, message="redelivered to the next worker")
    # No final state was stored for the interrupted run
    assert result.state is (State.STARTED if tasks.slow_record.options.track_started else State.PENDING)


def test_killed_children_leave_no_file_descriptors_behind_in_the_supervisor(
        app: App, start_worker: StartWorker, marker: str) -> None:
    """Each child hands its broker connections' sockets to the supervisor (RabbitMQ): the supervisor closes its
    copies, and the hand-over socket, when it has given back what the dead child held."""
    worker = start_worker(concurrency=1)

    def kill_child_mid_task() -> None:
        started = len(_started_pids(marker))
        result = tasks.slow_record.delay(marker, 1.0)
        wait_for(lambda: len(_started_pids(marker)) > started, timeout=10, message="task started")
        os.kill(_started_pids(marker)[-1], signal.SIGKILL)
        assert result.get(timeout=20) == "done"  # run again by the respawned child

    def supervisor_fds() -> int:
        assert len(children_of(worker.pid)) == 1
        return len(os.listdir(f"/proc/{worker.pid}/fd"))

    kill_child_mid_task()  # the supervisor's own broker connection is made on the first give-back
    before = supervisor_fds()
    for _ in range(3):
        kill_child_mid_task()
    assert supervisor_fds() == before


def _unix_sockets(pid: int) -> set[str]:
    """The inodes of the Unix sockets process ``pid`` holds open."""
    unix = {line.split()[6] for line in Path("/proc/net/unix").read_text().splitlines()[1:]}
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                held.add(target[len("socket:["):-1])
    return held & unix


def test_a_child_holds_none_of_its_supervisors_pipe_ends_so_a_dead_supervisor_breaks_them(
        app: App, start_worker: StartWorker) -> None:
    """Were a child to keep a copy of the supervisor's end of its pipe (or a sibling's), the pipe would not break
    when the supervisor dies: a child's reports would fill it and then block, and the child would never get to
    notice it is orphaned (a child once ran on for half an hour)."""
    worker = start_worker(concurrency=2)
    first = wait_children(worker.pid, 2)
    assert tasks.pid.delay().get(timeout=10) in first
    # A child forked later (respawned) inherits every end the supervisor holds at that moment
    os.kill(first[0], signal.SIGKILL)
    wait_for(lambda: len(set(children_of(worker.pid)) - set(first)) == 1, timeout=10, message="a child respawned")

    def shared() -> dict[int, set[str]]:
        supervisor = _unix_sockets(worker.pid)
        assert supervisor, "the supervisor holds its end of each child's pipe"
        return {child: held for child in children_of(worker.pid) if (held := supervisor & _unix_sockets(child))}

    # A child closes them first thing, a moment after its fork
    wait_for(lambda: not shared(), timeout=5, message="a child holds some of the supervisor's sockets")


def test_children_are_recycled_after_max_tasks_per_child(app: App, start_worker: StartWorker) -> None:
    start_worker(concurrency=1, extra=["--max-tasks-per-child", "2", "--prefetch", "1"])
    pids = [tasks.pid.delay().get(timeout=10) for _ in range(6)]
    assert len(set(pids)) == 3, pids


def test_children_are_recycled_when_their_memory_passes_max_memory_per_child(
        app: App, start_worker: StartWorker) -> None:
    # Given a limit every child passes (a Python process holds more than 1 MB)
    start_worker(concurrency=1, extra=["--max-memory-per-child", "1", "--prefetch", "1"])
    # Then each task runs in a fresh child
    pids = [tasks.pid.delay().get(timeout=10) for _ in range(3)]
    assert len(set(pids)) == 3, pids


def test_a_long_task_does_not_hold_back_short_ones_another_child_could_run(
        app: App, start_worker: StartWorker, marker: str) -> None:
    start_worker(concurrency=2, extra=["--prefetch", "8", "--drain-timeout", "1"])
    tasks.slow_record.delay(marker, 4.0)
    shorts = [tasks.add.delay(i, 1) for i in range(6)]
    began = time.monotonic()
    assert [r.get(timeout=10) for r in shorts] == [i + 1 for i in range(6)]
    assert time.monotonic() - began < 2.5, "short tasks finished while the long one ran"


def test_prefetched_and_running_messages_count_as_in_flight(app: App, start_worker: StartWorker,
                                                            broker_kind: BrokerKind, marker: str) -> None:
    start_worker(concurrency=1, extra=["--prefetch", "1", "--drain-timeout", "1"])
    tasks.slow_record.delay(marker, 3.0 + broker_kind.count_lag_s)  # still running when the counts catch up
    for i in range(4):
        tasks.add.delay(i, i)
    wait_for(lambda: len(_started_pids(marker)) == 1, timeout=10, message="task started")
    broker_kind.expect_depth(app.broker, "tests", ready=4, in_flight=1)


def test_a_slow_task_does_not_hold_back_the_acks_of_the_quick_ones_fetched_with_it(
        app: App, start_worker: StartWorker, broker_kind: BrokerKind, marker: str) -> None:
    # Given two quick tasks and a slow one, queued before the worker starts so that one child fetches them together
    quick = [tasks.add.delay(i, i) for i in range(2)]
    tasks.slow_record.delay(marker, 3.0 + broker_kind.count_lag_s)
    start_worker(concurrency=1, extra=["--prefetch", "4", "--drain-timeout", "1"])
    # When the quick ones are done and the slow one runs
    assert [r.get(timeout=10) for r in quick] == [0, 2]
    wait_for(lambda: len(_started_pids(marker)) == 1, timeout=10, message="slow task started")
    # Then their acks went out without waiting for the end of the batch: only the slow one is in flight
    broker_kind.expect_depth(app.broker, "tests", ready=0, in_flight=1, timeout_s=max(1.0, broker_kind.count_lag_s))


def test_bad_messages_are_dead_lettered_with_the_reason_and_the_worker_keeps_running(
        app: App, start_worker: StartWorker) -> None:
    start_worker()
    app.broker.enqueue("tests", "garbage", b"\x00\x01 not a message")
    app.broker.enqueue("tests", "pickled", b"application/x-python-pickle\n\x80\x04K\x01.")
    unknown = app.send("tests.no_such_task", queue="tests")
    with pytest.raises(Exception, match="no_such_task"):
        unknown.get(timeout=10)
    assert tasks.add.delay(1, 2).get(timeout=10) == 3
    wait_for(lambda: len(app.broker.dead_letters("tests")) == 3, timeout=5, message="three dead letters")
    reasons = {d.message_id: d.reason for d in app.broker.dead_letters("tests")}
    assert reasons["garbage"].startswith("malformed message")
    assert "not accepted" in reasons["pickled"]
    assert "no_such_task" in reasons[unknown.id]
    assert "not registered" in reasons[unknown.id]


def test_the_worker_serves_liveness_readiness_and_metrics(app: App, start_worker: StartWorker) -> None:
    worker = start_worker()
    tasks.add.delay(1, 1).get(timeout=10)
    base = f"http://127.0.0.1:{worker.health_port}"
    wait_for(lambda: _get(base + "/healthz")[0] == 200, timeout=5, message="healthz")
    assert _get(base + "/readyz")[0] == 200
    status, body = _get(base + "/metrics")
    assert status == 200
    assert 'taskfleet_tasks_total{outcome="success",queue="tests",task="tests.add"} 1.0' in body
    assert "taskfleet_task_runtime_seconds_bucket" in body


def test_metrics_count_every_task_though_children_report_them_in_batches(
        app: App, start_worker: StartWorker) -> None:
    worker = start_worker(concurrency=2, extra=["--prefetch", "8"])
    results = [tasks.add.delay(i, 1) for i in range(20)]
    assert [r.get(timeout=10) for r in results] == [i + 1 for i in range(20)]
    counted = 'taskfleet_tasks_total{outcome="success",queue="tests",task="tests.add"} 20.0'
    wait_for(lambda: counted in _get(f"http://127.0.0.1:{worker.health_port}/metrics")[1], timeout=5,
             message="all 20 successes counted")


def test_readiness_fails_while_the_broker_is_down_and_the_worker_recovers(
        app: App, start_worker: StartWorker, broker_kind: BrokerKind) -> None:
    worker = start_worker()
    base = f"http://127.0.0.1:{worker.health_port}"
    wait_for(lambda: _get(base + "/readyz")[0] == 200, timeout=5, message="ready")
    broker_kind.kill()
    wait_for(lambda: _get(base + "/readyz")[0] == 503, timeout=5, message="not ready without a broker")
    assert _get(base + "/healthz")[0] == 200, "a broker outage must not make the kubelet restart the worker"
    broker_kind.start()
    wait_for(lambda: _get(base + "/readyz")[0] == 200, timeout=10, message="ready again")
    app.close()
    assert tasks.add.delay(2, 3).get(timeout=15) == 5, "children reconnected by themselves"


def test_broker_passwords_never_appear_in_the_worker_log(broker_kind: BrokerKind) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "taskfleet", "worker", "-A", "tests.tasks:app", "--log-format", "json",
         "--broker", broker_kind.unreachable_url("hunter2"), "--broker-timeout", "1"],
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == ExitCode.BROKER_UNREACHABLE
    assert "hunter2" not in proc.stdout + proc.stderr
    assert "broker unreachable" in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["-A", "tests.no_such_module:app", "--broker", "redis://127.0.0.1:1/0"], ExitCode.APP_IMPORT_ERROR),
        (["-A", "tests.tasks:app"], ExitCode.BAD_CONFIG),
        (["-A", "tests.tasks:app", "--broker", "redis://127.0.0.1:1/0", "-Q", "bad queue!"], ExitCode.BAD_CONFIG),
    ],
    ids=["app-not-importable", "no-broker-configured", "bad-queue-name"],
)
def test_startup_failures_exit_with_a_named_code(args: list[str], code: ExitCode) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKFLEET_")}
    proc = subprocess.run([sys.executable, "-m", "taskfleet", "worker", "--log-format", "json", *args],
                          capture_output=True, text=True, timeout=30, env=env)
    assert proc.returncode == code, proc.stdout + proc.stderr


def test_a_second_worker_shares_the_queue(app: App, start_worker: StartWorker) -> None:
    first = start_worker(concurrency=1, extra=["--prefetch", "1"])
    second = start_worker(concurrency=1, extra=["--prefetch", "1"])
    pids = {tasks.pid.delay().get(timeout=10) for _ in range(20)}
    children = set(wait_children(first.pid, 1)) | set(wait_children(second.pid, 1))
    assert pids <= children


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def test_a_health_port_already_in_use_is_a_clear_configuration_error(redis_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "taskfleet", "worker", "-A", "tests.tasks:app", "--broker", redis_url,
             "--log-format", "json", "--health-host", "127.0.0.1", "--health-port", str(port)],
            capture_output=True, text=True, timeout=30,
        )
    assert proc.returncode == ExitCode.BAD_CONFIG
    assert "cannot serve health checks" in proc.stdout + proc.stderr
