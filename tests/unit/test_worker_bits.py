"""Specification of the worker's small parts: loading the user's App (taskfleet.worker.loader), worker settings
(taskfleet.worker.settings), what a child holds (taskfleet.worker.holdings), how far it got
(taskfleet.worker.progress), how it settles its messages and reports them (taskfleet.worker.settler), and how the
supervisor settles what a dead child held (taskfleet.worker.progress.sort_leftovers)."""

from __future__ import annotations

import multiprocessing
import os
import signal as os_signal
import sys
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

from taskfleet import App, ConfigurationError, signals
from taskfleet.brokers.base import Delivery
from taskfleet.brokers.stub import StubBroker
from taskfleet.settings import BrokerSettings
from taskfleet.worker import events
from taskfleet.worker import holdings as holdings_module
from taskfleet.worker.child import Child
from taskfleet.worker.holdings import SAFE_LEASE_FRACTION, Held, Holdings, Lease, lease_certain, lease_clock
from taskfleet.worker.loader import AppImportError, load_app, prepare_app
from taskfleet.worker.progress import Progress, sort_leftovers
from taskfleet.worker.settings import DEFAULT_PREFETCH, DEFAULT_PREFETCH_RABBITMQ, WorkerSettings, default_prefetch
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


def test_dash_a_with_a_package_finds_the_app_in_its_taskfleet_module_like_celerys_proj_celery(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "proj_a").mkdir()
    (tmp_path / "proj_a" / "__init__.py").write_text("")
    (tmp_path / "proj_a" / "taskfleet.py").write_text("from taskfleet import App\napp = App('proj')\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    assert load_app("proj_a").name == "proj"


def test_dash_a_follows_a_dotted_attribute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ext_module.py").write_text(
        "from types import SimpleNamespace\nfrom taskfleet import App\next = SimpleNamespace(app=App('web'))\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    assert load_app("ext_module:ext.app").name == "web"


def test_prepare_app_imports_the_task_modules_and_names_one_that_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "prep_tasks_ok.py").write_text("")
    (tmp_path / "prep_tasks_bad.py").write_text("raise ValueError('bad tasks')\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    assert prepare_app(App("p", include=["prep_tasks_ok"]), {}) == ["prep_tasks_ok"]
    with pytest.raises(AppImportError, match="'prep_tasks_bad': ValueError: bad tasks"):
        prepare_app(App("p", include=["prep_tasks_bad"]), {})


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


@pytest.mark.parametrize(("url", "expected"), [
    ("amqp://guest:guest@rabbit:5672/%2F", DEFAULT_PREFETCH_RABBITMQ),
    ("AMQPS://rabbit/vhost", DEFAULT_PREFETCH_RABBITMQ),
    ("redis://localhost:6379/0", DEFAULT_PREFETCH),
    ("sqlite:///tmp/tf.db", DEFAULT_PREFETCH),
    ("", DEFAULT_PREFETCH),
])
def test_the_default_prefetch_is_larger_on_rabbitmq_only(url: str, expected: int) -> None:
    assert default_prefetch(url) == expected


# -- Holdings ----------------------------------------------------------------------------------------------------


def _deliveries(*ids: str) -> list[Delivery]:
    return [Delivery("q", message_id, b"") for message_id in ids]


def _ids(items: Sequence[Delivery | Held]) -> list[str]:
    return [(item.delivery if isinstance(item, Held) else item).message_id for item in items]


def test_start_next_takes_deliveries_in_the_order_they_were_added() -> None:
    holdings = Holdings()
    holdings.add(_deliveries("a", "b"))
    holdings.add(_deliveries("c"))

    started = [holdings.start_next() for _ in range(4)]

    assert [h.delivery.message_id if h else None for h in started] == ["a", "b", "c", None]


def test_deliveries_are_numbered_in_fetch_order_across_batches() -> None:
    holdings = Holdings()

    first = holdings.add(_deliveries("a", "b"))
    holdings.take_waiting()
    second = holdings.add(_deliveries("a"))  # the same message again, e.g. after a release

    assert [h.seq for h in first + second] == [1, 2, 3]


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


class _Clock:
    """``time`` for taskfleet.worker.holdings with a ``monotonic`` the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.clock_gettime = time.clock_gettime

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr(holdings_module, "time", fake)
    return fake


def test_take_waiting_takes_nothing_while_the_oldest_unstarted_delivery_has_waited_less_than_the_threshold(
        clock: _Clock) -> None:
    holdings = Holdings()
    holdings.add(_deliveries("a", "b"))
    holdings.start_next()

    clock.now += 0.4
    assert holdings.take_waiting(if_waiting_longer_than_s=0.5) == []
    assert sorted(_ids(holdings.all())) == ["a", "b"]


def test_take_waiting_takes_the_unstarted_ones_behind_one_long_task(clock: _Clock) -> None:
    holdings = Holdings()
    holdings.add(_deliveries("a", "b"))
    holdings.start_next()

    clock.now += 0.5

    assert _ids(holdings.take_waiting(if_waiting_longer_than_s=0.5)) == ["b"]


def test_take_waiting_takes_the_unstarted_ones_behind_a_row_of_medium_tasks_though_none_ran_long(
        clock: _Clock) -> None:
    # Given a child that fetched three messages and has run the first for 0.3 s, then started the second
    holdings = Holdings()
    holdings.add(_deliveries("a", "b", "c"))
    holdings.start_next()
    clock.now += 0.3
    holdings.finish()
    holdings.start_next()
    # When the third has waited 0.5 s in all, though the running task started 0.2 s ago
    clock.now += 0.2
    # Then it goes back
    assert _ids(holdings.take_waiting(if_waiting_longer_than_s=0.5)) == ["c"]


def test_take_waiting_takes_deliveries_taken_in_later_together_with_the_oldest(clock: _Clock) -> None:
    holdings = Holdings()
    holdings.add(_deliveries("a", "b"))
    holdings.start_next()
    clock.now += 0.4
    holdings.add(_deliveries("c"))  # pushed to the child's connection while "a" runs

    clock.now += 0.1

    assert _ids(holdings.take_waiting(if_waiting_longer_than_s=0.5)) == ["b", "c"]


def test_take_waiting_with_a_threshold_takes_nothing_when_no_task_is_running(clock: _Clock) -> None:
    holdings = Holdings()
    holdings.add(_deliveries("a", "b"))

    clock.now += 60

    assert holdings.take_waiting(if_waiting_longer_than_s=0.5) == []


def test_take_waiting_reports_what_it_takes_before_returning_and_only_when_it_takes_something() -> None:
    holdings = Holdings()
    reported: list[list[str]] = []
    holdings.add(_deliveries("a", "b", "c"))
    holdings.start_next()

    holdings.take_waiting(if_waiting_longer_than_s=3600, on_taken=lambda held: reported.append(_ids(held)))
    taken = holdings.take_waiting(on_taken=lambda held: reported.append(_ids(held)))

    assert reported == [["b", "c"]] == [_ids(taken)]


# -- leases ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age_s", "certain"),
    [
        pytest.param(0.0, True, id="just confirmed"),
        pytest.param(0.99 * SAFE_LEASE_FRACTION * 30, True, id="within the safe fraction"),
        pytest.param(SAFE_LEASE_FRACTION * 30, False, id="at the safe fraction"),
        pytest.param(31.0, False, id="past the visibility timeout (a stall)"),
        pytest.param(-1.0, False, id="confirmed in the future"),
    ],
)
def test_a_lease_is_certain_only_within_a_safe_fraction_of_the_visibility_timeout(age_s: float, certain: bool) -> None:
    assert lease_certain(1000.0, 1000.0 + age_s, 30.0) is certain


def test_a_lease_never_confirmed_is_never_certain() -> None:
    assert not lease_certain(None, 1000.0, 30.0)


def test_the_safe_fraction_leaves_room_for_renewals_every_third_of_the_timeout_and_a_margin() -> None:
    assert 1 / 3 < SAFE_LEASE_FRACTION < 1


def test_the_lease_clock_counts_forward() -> None:
    first = lease_clock()
    assert lease_clock() >= first


def test_a_fetched_delivery_is_certain_until_the_safe_fraction_has_passed() -> None:
    holdings = Holdings()
    [a] = holdings.add(_deliveries("a"), confirmed_at=100.0)

    assert holdings.lease(a.seq, 100.0 + 0.4 * 10, 10.0) is Lease.CERTAIN
    assert holdings.lease(a.seq, 100.0 + 20, 10.0) is Lease.UNCERTAIN


def test_a_delivery_fetched_without_a_time_is_uncertain() -> None:
    holdings = Holdings()
    [a] = holdings.add(_deliveries("a"))

    assert holdings.lease(a.seq, 100.0, 10.0) is Lease.UNCERTAIN


def test_a_renewal_confirms_what_the_broker_still_held_and_marks_the_rest_lost() -> None:
    holdings = Holdings()
    a, b, c = holdings.add(_deliveries("a", "b", "c"), confirmed_at=100.0)
    holdings.start_next()

    lost = holdings.confirm([a, b, c], [a.delivery, c.delivery], at=150.0)

    assert _ids(lost) == ["b"]
    assert [holdings.lease(h.seq, 151.0, 10.0) for h in (a, b, c)] == [Lease.CERTAIN, Lease.LOST, Lease.CERTAIN]
    assert holdings.confirm([a, b, c], [a.delivery, c.delivery], at=152.0) == [], "reported lost once"


def test_a_renewal_fences_by_delivery_count() -> None:
    holdings = Holdings()
    [a] = holdings.add([Delivery("q", "a", b"", 2)], confirmed_at=100.0)

    assert _ids(holdings.confirm([a], [Delivery("q", "a", b"", 3)], at=150.0)) == ["a"]


def test_a_late_renewal_result_never_moves_a_confirmation_back() -> None:
    holdings = Holdings()
    [a] = holdings.add(_deliveries("a"), confirmed_at=100.0)
    holdings.confirm([a], [a.delivery], at=200.0)

    holdings.confirm([a], [a.delivery], at=150.0)

    assert holdings.lease(a.seq, 204.0, 10.0) is Lease.CERTAIN


def test_a_failed_renewal_makes_the_leases_uncertain() -> None:
    holdings = Holdings()
    [a] = holdings.add(_deliveries("a"), confirmed_at=100.0)

    holdings.unconfirm([a])

    assert holdings.lease(a.seq, 100.0, 10.0) is Lease.UNCERTAIN


def test_a_renewal_leaves_deliveries_no_longer_held_alone() -> None:
    holdings = Holdings()
    a, b = holdings.add(_deliveries("a", "b"), confirmed_at=100.0)
    holdings.start_next()
    holdings.finish()
    holdings.take_waiting()

    assert holdings.confirm([a, b], [], at=150.0) == []


def test_add_reports_what_it_adds_before_returning_and_only_when_it_adds_something() -> None:
    holdings = Holdings()
    reported: list[list[str]] = []

    holdings.add([], on_added=lambda held: reported.append(_ids(held)))
    added = holdings.add(_deliveries("a", "b"), on_added=lambda held: reported.append(_ids(held)))

    assert reported == [["a", "b"]] == [_ids(added)]
    assert holdings.waiting() == 2


# -- Child: deliveries already pushed to its connection ----------------------------------------------------------


class _Buffered(StubBroker):
    """A stub broker whose connection has ``buffered`` deliveries pushed in advance (as RabbitMQ's prefetch)."""

    def __init__(self, buffered: list[Delivery]) -> None:
        super().__init__(BrokerSettings(url="memory://"))
        self.buffered = buffered
        self.calls = 0

    def fetch_buffered(self, max_messages: int, *, read_socket: bool = True) -> list[Delivery]:
        self.calls += 1
        taken, self.buffered = self.buffered[:max_messages], self.buffered[max_messages:]
        return taken


def _child() -> tuple[Child, Connection]:
    ours, theirs = multiprocessing.Pipe(duplex=True)
    return Child(tasks.app, WorkerSettings(queues=("q",), prefetch=4), theirs, 0), ours


def _events(conn: Connection) -> list[object]:
    got = []
    while conn.poll(0.05):
        got.append(conn.recv())
    return got


def test_a_child_holds_and_reports_what_its_connection_received_behind_what_waits_in_one_event() -> None:
    child, conn = _child()
    child.holdings.add(_deliveries("a", "b"))
    child.holdings.start_next()
    broker = _Buffered(_deliveries("c", "d"))

    child._take_buffered(broker)

    assert _ids([h for h in iter(child.holdings.start_next, None)]) == ["b", "c", "d"]
    assert _events(conn) == [events.Fetched([(3, "q", "c", 1), (4, "q", "d", 1)])]


def test_a_child_whose_connection_received_nothing_reports_nothing() -> None:
    child, conn = _child()

    child._take_buffered(_Buffered([]))

    assert child.holdings.waiting() == 0
    assert _events(conn) == []


def test_a_child_takes_nothing_from_its_connection_while_its_main_thread_fetches() -> None:
    child, conn = _child()
    broker = _Buffered(_deliveries("c"))

    with child._intake:  # the main thread is in fetch: what arrives is that fetch's
        child._take_buffered(broker)

    assert (broker.calls, child.holdings.waiting(), _events(conn)) == (0, 0, [])


class _ReadsAhead(StubBroker):
    """RabbitMQ as a child's connection sees it: a fetch returns one delivery, and the read that brought it took the
    next one off the socket too, into the connection's buffer, where it waits for a take."""

    def __init__(self) -> None:
        super().__init__(BrokerSettings(url="memory://"))
        self.read_ahead: list[Delivery] = []

    def fetch(self, queues: Sequence[str], *, max_messages: int, timeout_s: float) -> list[Delivery]:
        got = super().fetch(queues, max_messages=1, timeout_s=timeout_s)
        self.read_ahead += super().fetch(queues, max_messages=1, timeout_s=0)
        return got

    def fetch_buffered(self, max_messages: int, *, read_socket: bool = True) -> list[Delivery]:
        taken, self.read_ahead = self.read_ahead[:max_messages], self.read_ahead[max_messages:]
        return taken


def test_a_child_reports_what_its_connection_read_ahead_before_it_starts_a_task(
    memory_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task that takes its child down as it starts (a segfault, an OOM kill) must not take unreported deliveries
    with it: the supervisor gives back only what it was told of, and the rest comes back counted as lost."""
    monkeypatch.setattr(memory_app, "_broker", (os.getpid(), _ReadsAhead()))
    first, second = tasks.add.delay(1, 2), tasks.add.delay(3, 4)
    ours, theirs = multiprocessing.Pipe(duplex=True)
    reported_at_first_start: list[str] = []

    def on_prerun(sender: Any = None, **named: Any) -> None:
        if named["task_id"] != first.id:
            return
        while ours.poll(0):  # without waiting: the child's background thread would take the rest meanwhile
            if isinstance(event := ours.recv(), events.Fetched):
                reported_at_first_start.extend(message_id for _, _, message_id, _ in event.items)

    signals.task_prerun.connect(on_prerun)
    previous = os_signal.getsignal(os_signal.SIGTERM), os_signal.getsignal(os_signal.SIGINT)
    try:
        settings = WorkerSettings(queues=("tests",), prefetch=4, max_tasks_per_child=2, poll_timeout_s=0.1)
        assert Child(memory_app, settings, theirs, 0).run() == "max_tasks"
    finally:
        signals.task_prerun.disconnect(on_prerun)
        os_signal.signal(os_signal.SIGTERM, previous[0])
        os_signal.signal(os_signal.SIGINT, previous[1])

    assert sorted(reported_at_first_start) == sorted([first.id, second.id])


def test_lease_brokers_have_nothing_buffered() -> None:
    broker = StubBroker(BrokerSettings(url="memory://"))
    broker.enqueue("q", "m", b"x")

    assert broker.fetch_buffered(8) == []
    assert _ids(broker.fetch(["q"], max_messages=8, timeout_s=0)) == ["m"]


# -- Progress ----------------------------------------------------------------------------------------------------


def test_progress_shows_the_running_delivery_until_it_finishes() -> None:
    progress = Progress()
    assert progress.running() is None

    progress.start(1)
    assert progress.running() == 1

    progress.finish(1)
    assert (progress.running(), progress.finished) == (None, 1)


def test_progress_is_shared_with_a_forked_process() -> None:
    # Given a Progress made before the fork, as the supervisor makes one per child
    progress = Progress()
    pid = os.fork()
    if pid == 0:  # the child marks delivery 7 started, 6 finished
        progress.start(7)
        progress.finish(6)
        os._exit(0)
    os.waitpid(pid, 0)

    # Then the parent reads what the child wrote
    assert (progress.started, progress.finished, progress.running()) == (7, 6, 7)


# -- sort_leftovers ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("finished_upto", "running", "timed_out", "expected"),
    [
        pytest.param(0, None, None, ([], [], ["1", "2", "3", "4"]), id="died before starting any"),
        pytest.param(2, 3, None, (["1", "2"], ["3"], ["4"]), id="died in the third, acks of two pending"),
        pytest.param(4, None, None, (["1", "2", "3", "4"], [], []), id="died between batches, acks pending"),
        pytest.param(2, None, None, (["1", "2"], [], ["3", "4"]), id="died between two tasks"),
        pytest.param(1, 2, 2, (["1", "2"], [], ["3", "4"]), id="killed at its hard time limit"),
    ],
)
def test_a_dead_childs_deliveries_are_sorted_by_how_far_it_got(
    finished_upto: int, running: int | None, timed_out: int | None,
    expected: tuple[list[str], list[str], list[str]],
) -> None:
    held = {seq: Delivery("q", str(seq), b"") for seq in (1, 2, 3, 4)}

    left = sort_leftovers(held, finished_upto=finished_upto, running=running, timed_out=timed_out)

    assert (_ids(left.finished), _ids(left.interrupted), _ids(left.unstarted)) == expected


def test_deliveries_the_supervisor_no_longer_holds_are_left_alone() -> None:
    # Acked and reported (done), released or dropped deliveries are gone from the supervisor's view
    held = {5: Delivery("q", "5", b""), 7: Delivery("q", "7", b"")}

    left = sort_leftovers(held, finished_upto=6, running=7, timed_out=None)

    assert (_ids(left.finished), _ids(left.interrupted), _ids(left.unstarted)) == (["5"], ["7"], [])
