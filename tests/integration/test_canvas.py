"""Workflows (chain, group, chord, map/starmap/chunks, link/link_error) run by real workers on every broker.

To stay within a few minutes on three brokers, the tests of one broker share one worker (``fleet``: a clean broker
and result backend for the module, a worker with the canvas tasks of tests/canvas_tasks.py) and send their
workflows with fresh ids; the crash test runs its own workers on a queue of its own. The Redis result backend's
chord-join script is held to the specification of tests/unit/test_chord_join.py here (it needs a server).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from taskfleet import App, ChordError, GroupResult, State, TimeLimitExceeded, chain, chord, group
from taskfleet.backends import ResultBackend, connect
from taskfleet.settings import BackendSettings
from tests import canvas_tasks as ct
from tests import tasks
from tests.support.brokers import ALL_KIND_NAMES, BrokerKind, RabbitMQKind, RedisKind, SQLiteKind
from tests.support.faults import kill_tree
from tests.support.servers import RedisServer
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess
from tests.unit import test_chord_join

pytestmark = pytest.mark.integration

APP = "tests.canvas_tasks:app"
#: The queue of the crash test's own workers (the shared worker does not consume it).
CRASH_QUEUE = "canvas-crash"


@dataclass
class Fleet:
    """One broker for the module's tests: its kind, URLs and the worker they share."""

    kind: BrokerKind
    broker_url: str
    backend_url: str
    worker: WorkerProcess

    def start_worker(self, **kwargs: Any) -> WorkerProcess:
        kwargs.setdefault("app", APP)
        kwargs["extra"] = [*self.kind.worker_args, *kwargs.get("extra", [])]
        return WorkerProcess(broker=self.broker_url, backend=self.backend_url, **kwargs).wait_started()


@pytest.fixture(scope="module", params=ALL_KIND_NAMES)
def fleet(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    kind: BrokerKind
    if request.param == "redis":
        kind = RedisKind(request.getfixturevalue("redis_server"))
    elif request.param == "rabbitmq":
        kind = RabbitMQKind(request.getfixturevalue("rabbitmq_server"))
    else:
        kind = SQLiteKind(tmp_path_factory.mktemp("canvas-sqlite"))
    with contextlib.ExitStack() as stack:
        broker_url = stack.enter_context(kind.clean_url())
        if isinstance(kind, SQLiteKind):
            backend_url = kind.new_url("results")
        else:
            server: RedisServer = request.getfixturevalue("redis_server")
            server.start()
            backend_url = f"{server.url}/1"
            redis.Redis.from_url(backend_url).flushdb()
        fleet = Fleet(kind, broker_url, backend_url, worker=None)  # type: ignore[arg-type]
        fleet.worker = fleet.start_worker(concurrency=4)
        stack.callback(fleet.worker.stop)
        yield fleet


@pytest.fixture
def app(fleet: Fleet) -> Iterator[App]:
    """The test tasks' App, pointed at the fleet's broker and result backend."""
    tasks.app.configure(broker=fleet.broker_url, broker_management_url=fleet.kind.management_url,
                        result_backend=fleet.backend_url)
    yield tasks.app
    tasks.app.close()


@pytest.fixture
def marker(tmp_path: Path) -> str:
    return str(tmp_path / "marker.txt")


# -- chains ------------------------------------------------------------------------------------------------------


def test_a_chain_passes_each_result_on_and_its_result_links_back_through_its_parents(app: App) -> None:
    result = (tasks.add.s(2, 2) | ct.mul.s(8) | tasks.add.s(1)).delay()

    assert result.get(timeout=15) == 33
    assert result.parent is not None
    assert result.parent.get(timeout=1) == 32
    assert result.parent.parent is not None
    assert result.parent.parent.get(timeout=1) == 4
    assert result.parent.parent.parent is None


def test_a_failed_chain_step_stops_the_chain_its_get_raises_and_its_errback_runs_once(app: App, marker: str,
                                                                                        tmp_path: Path) -> None:
    never = str(tmp_path / "never.txt")
    result = chain(tasks.add.s(1, 1), ct.boom.s(), tasks.record.si(never, "ran")).link_error(
        ct.note_failure.s(marker)).delay()

    with pytest.raises(ValueError, match=r"boom \[2\]"):
        result.get(timeout=15)
    wait_for(lambda: tasks.lines(marker), timeout=10, message="the errback ran")
    time.sleep(0.5)  # time enough for a second run of it, were there one
    assert tasks.lines(marker) == ["tests.boom builtins.ValueError boom [2]"]
    assert tasks.lines(never) == []
    assert result.state is State.FAILURE


def test_a_chain_step_killed_at_its_hard_time_limit_fails_the_chain_and_runs_its_errback(app: App,
                                                                                         marker: str) -> None:
    result = chain(tasks.hard_limited.s(), tasks.add.s(1)).link_error(ct.note_failure.s(marker)).delay()

    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=20)
    wait_for(lambda: tasks.lines(marker), timeout=10, message="the errback ran")
    assert tasks.lines(marker)[0].startswith("tests.hard_limited taskfleet.errors.TimeLimitExceeded")


# -- groups and chords ---------------------------------------------------------------------------------------------


def test_a_group_returns_its_results_in_order_and_a_saved_group_is_restored(app: App) -> None:
    result = group(tasks.add.s(i, i) for i in range(20)).delay()
    assert isinstance(result, GroupResult)
    result.save()

    assert result.get(timeout=15) == [2 * i for i in range(20)]
    restored = GroupResult.restore(result.id, app=app)
    assert restored is not None
    assert restored.get(timeout=1) == [2 * i for i in range(20)]
    assert (restored.ready(), restored.successful(), restored.completed_count()) == (True, True, 20)


def test_a_chord_runs_its_body_once_with_the_header_results_in_header_order(app: App, marker: str) -> None:
    result = chord([ct.slow_part.s(i, 0.05 * (10 - i), marker) for i in range(10)], ct.collect.s()).delay()
    once = chord([tasks.add.s(i, i) for i in range(10)], ct.body_once.s(marker + ".body")).delay()

    assert result.get(timeout=20) == list(range(10))
    assert isinstance(result.parent, GroupResult)
    assert result.parent.get(timeout=1) == list(range(10))
    assert once.get(timeout=20) == 10
    assert len(tasks.lines(marker + ".body")) == 1


def test_a_failed_chord_header_task_raises_chord_error_naming_it_and_runs_the_errback_once(app: App,
                                                                                          marker: str) -> None:
    result = chord([tasks.add.s(1, 1), ct.boom.s().set(task_id="the-bad-part"), ct.boom.s()],
                   ct.collect.s()).link_error(ct.note_failure.s(marker)).delay()

    with pytest.raises(ChordError, match=r"tests\.boom\[the-bad-part\]|tests\.boom\[") as caught:
        result.get(timeout=15)
    assert "tests.boom" in str(caught.value)
    wait_for(lambda: tasks.lines(marker), timeout=10, message="the chord's errback ran")
    time.sleep(0.5)
    [line] = tasks.lines(marker)
    assert line.startswith("tests.collect taskfleet.errors.ChordError")


def test_an_empty_chord_runs_its_body_with_an_empty_list(app: App) -> None:
    assert chord([], ct.collect.s()).delay().get(timeout=15) == []


def test_map_starmap_and_chunks_run_the_task_over_their_items(app: App) -> None:
    mapped = ct.tsum.map([[1, 2], [3, 4]]).delay()
    starmapped = tasks.add.starmap([(1, 2), (3, 4)]).delay()
    chunked = tasks.add.chunks([(i, i) for i in range(7)], 3).delay()

    assert mapped.get(timeout=15) == [3, 7]
    assert starmapped.get(timeout=15) == [3, 7]
    assert chunked.get(timeout=15) == [[0, 2, 4], [6, 8, 10], [12]]


# -- nesting -----------------------------------------------------------------------------------------------------


def test_workflows_nest_as_in_celery(app: App) -> None:
    group_in_chain = chain(tasks.add.s(1, 1), group(ct.mul.s(2), ct.mul.s(3)), ct.tsum.s()).delay()
    chord_in_chain = chain(tasks.add.s(1, 1), chord([ct.mul.s(10), ct.mul.s(100)], ct.tsum.s()), ct.mul.s(2)).delay()
    chain_in_group = group(chain(tasks.add.s(1, 1), ct.mul.s(5)), tasks.add.s(3, 3)).delay()
    chain_in_header = chord([chain(tasks.add.s(1, 1), ct.mul.s(7)), tasks.add.s(0, 1)], ct.collect.s()).delay()

    assert group_in_chain.get(timeout=20) == 10
    assert chord_in_chain.get(timeout=20) == 440
    assert chain_in_group.get(timeout=20) == [10, 6]
    assert chain_in_header.get(timeout=20) == [14, 1]


# -- links -------------------------------------------------------------------------------------------------------


def test_link_sends_the_result_to_a_callback_and_link_error_the_failure_to_an_errback(app: App, marker: str,
                                                                                      tmp_path: Path) -> None:
    errors = str(tmp_path / "errors.txt")
    ok = tasks.add.apply_async((20, 22), link=ct.note.s(marker), link_error=ct.note_failure.s(errors))
    bad = ct.boom.apply_async((1,), link=ct.note.s(marker), link_error=[ct.note_failure.s(errors)])

    assert ok.get(timeout=15) == 42
    with pytest.raises(ValueError, match="boom"):
        bad.get(timeout=15)
    wait_for(lambda: tasks.lines(marker) and tasks.lines(errors), timeout=10, message="callback and errback ran")
    time.sleep(0.5)
    assert tasks.lines(marker) == ["42"]
    assert tasks.lines(errors) == ["tests.boom builtins.ValueError boom [1]"]


# -- scale and crashes -------------------------------------------------------------------------------------------


def test_a_chord_of_a_thousand_header_tasks_runs_its_body_once_with_every_result(app: App, marker: str) -> None:
    began = time.monotonic()
    result = chord([tasks.add.s(i, 0) for i in range(1000)], ct.body_once.s(marker)).delay()

    assert result.get(timeout=120) == 1000
    assert tasks.lines(marker)[0].endswith(f"{list(range(1000))}")
    assert len(tasks.lines(marker)) == 1
    assert time.monotonic() - began < 120


def test_a_worker_killed_in_the_middle_of_a_chords_header_still_runs_the_body_exactly_once(
        app: App, fleet: Fleet, tmp_path: Path) -> None:
    starts, bodies = str(tmp_path / "starts.txt"), str(tmp_path / "bodies.txt")
    header = [ct.slow_part.s(i, 1.0, starts).set(queue=CRASH_QUEUE) for i in range(8)]
    first = fleet.start_worker(queues=CRASH_QUEUE, concurrency=3)
    second: WorkerProcess | None = None
    try:
        result = chord(header, ct.body_once.s(bodies).set(queue=CRASH_QUEUE)).delay()
        wait_for(lambda: len(tasks.lines(starts)) >= 4, timeout=20, message="the header is under way")
        kill_tree(first.pid)  # kill -9 of the supervisor and its children: nothing is settled
        first.wait_exit(timeout=10)
        second = fleet.start_worker(queues=CRASH_QUEUE, concurrency=3)

        assert result.get(timeout=60) == 8
        time.sleep(1.5)  # a duplicate body would run within this
        assert len(tasks.lines(bodies)) == 1, tasks.lines(bodies)
        started = [int(line.split()[1]) for line in tasks.lines(starts)]
        assert set(started) == set(range(8))
        assert len(started) > 8, "the header tasks the kill interrupted ran again"
    finally:
        first.stop()
        if second is not None:
            second.stop()


# -- the Redis backend's chord join ------------------------------------------------------------------------------

_SPECS = {name: spec for name, spec in vars(test_chord_join).items() if name.startswith("test_")}


@pytest.fixture
def redis_backend(redis_server: RedisServer) -> Iterator[ResultBackend]:
    """A Redis result backend on a database of its own (db 3), emptied first."""
    redis_server.start()
    url = f"{redis_server.url}/3"
    redis.Redis.from_url(url).flushdb()
    backend = connect(BackendSettings(url=url))
    yield backend
    backend.close()


@pytest.mark.parametrize("spec", list(_SPECS.values()), ids=list(_SPECS))
def test_the_redis_backend_keeps_chord_joins_to_the_same_specification(
        spec: Callable[[ResultBackend], None], redis_backend: ResultBackend) -> None:
    spec(redis_backend)
