"""Beat without a server: catch-up planning (pure), tick ids, the loop with two replicas on the stub store, and the
ways users declare periodic tasks."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from taskfleet import App, ConfigurationError, Every, Message, PeriodicEntry, Signature, crontab
from taskfleet.brokers.stub import StubBeatStore, reset_beat_state
from taskfleet.worker.beat import Beat, BeatSettings, Tick, plan, tick_id
from taskfleet.worker.metrics import BeatMetrics

T0_MS = 1_700_000_000_000  # a whole second
GRACE_MS = 500


EVERY_SECOND = Every(1.0)


def entry(catch_up: str = "last", schedule: Every | crontab = EVERY_SECOND) -> PeriodicEntry:
    return PeriodicEntry(name="e", signature=Signature(task="t"), schedule=schedule,
                         catch_up=catch_up)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("catch_up", "cursor_ms", "now_ms", "fire", "skip_to"),
    [
        # on time: every policy sends the one due tick
        ("last", T0_MS, T0_MS + 1_010, (T0_MS + 1_000,), None),
        ("all", T0_MS, T0_MS + 1_010, (T0_MS + 1_000,), None),
        ("none", T0_MS, T0_MS + 1_010, (T0_MS + 1_000,), None),
        # nothing due yet
        ("last", T0_MS, T0_MS + 999, (), None),
        # four ticks missed: "last" sends the newest, "all" all of them, "none" skips them
        ("last", T0_MS, T0_MS + 4_700, (T0_MS + 4_000,), None),
        ("all", T0_MS, T0_MS + 4_700, tuple(T0_MS + k * 1_000 for k in range(1, 5)), None),
        ("none", T0_MS, T0_MS + 4_700, (), T0_MS + 4_000),
        # "none" still sends a tick that is within the grace
        ("none", T0_MS, T0_MS + 4_200, (T0_MS + 4_000,), T0_MS + 3_000),
    ],
)
def test_plan_applies_the_catch_up_policy(catch_up: str, cursor_ms: int, now_ms: int,
                                          fire: tuple[int, ...], skip_to: int | None) -> None:
    todo = plan(entry(catch_up), cursor_ms, now_ms, UTC, grace_ms=GRACE_MS)
    assert (todo.fire, todo.skip_to) == (fire, skip_to)


def test_catch_up_all_sends_at_most_max_catch_up_ticks_and_skips_the_older_ones() -> None:
    todo = plan(entry("all"), T0_MS, T0_MS + 86_400_000, UTC, grace_ms=GRACE_MS)
    assert len(todo.fire) == 100
    assert todo.fire[-1] == T0_MS + 86_400_000
    assert todo.skip_to == todo.fire[0] - 1_000


def test_plan_walks_cron_ticks_in_the_entrys_time_zone() -> None:
    # Given a cursor at 09:00 Berlin and now 18:00 Berlin, for an entry at 10:00 and 17:00 local
    cursor = datetime(2024, 1, 1, 8, 0, tzinfo=UTC)
    todo = plan(entry("all", crontab(minute="0", hour="10,17")), round(cursor.timestamp() * 1000),
                round((cursor + timedelta(hours=9)).timestamp() * 1000), ZoneInfo("Europe/Berlin"),
                grace_ms=GRACE_MS)
    assert [datetime.fromtimestamp(ms / 1000, UTC).hour for ms in todo.fire] == [9, 16]


def test_tick_ids_are_the_same_on_every_replica_and_differ_per_tick_and_entry() -> None:
    assert tick_id("daily", T0_MS) == tick_id("daily", T0_MS)
    assert len({tick_id("daily", T0_MS), tick_id("daily", T0_MS + 1), tick_id("weekly", T0_MS)}) == 3


# -- the loop on the stub store -------------------------------------------------------------------------------------


class Clock:
    def __init__(self, at: float) -> None:
        self.now = at

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def beat_app() -> Iterator[App]:
    reset_beat_state()
    app = App("beat-unit", broker="memory://", default_queue="beat")

    @app.task
    def ping() -> None: ...

    app.add_periodic_task(1.0, ping.s(), name="every-second", catch_up="all")
    yield app
    reset_beat_state()


def replica(app: App, clock: Clock, holder: str, lease_s: float = 3.0) -> Beat:
    store = StubBeatStore(app.broker, namespace=app.name, holder=holder, lease_s=lease_s, clock=clock)
    return Beat(app, store, BeatSettings(lease_s=lease_s), BeatMetrics(), clock=clock)


def sent(app: App) -> list[Message]:
    deliveries = app.broker.fetch(["beat"], max_messages=1000, timeout_s=0)
    return [Message.decode(d.data, accept=frozenset({"json"})) for d in deliveries]


def test_two_replicas_send_each_tick_once_and_the_standby_takes_over_after_the_lease(beat_app: App) -> None:
    clock = Clock(T0_MS / 1000)
    a, b = replica(beat_app, clock, "a"), replica(beat_app, clock, "b")
    # Given a leads and b waits
    a.step()
    b.step()
    assert (a.leading, b.leading) == (True, False)
    for _ in range(5):
        clock.now += 1.0
        a.step()
        b.step()
    # When a stops renewing (it died) for longer than the lease
    for _ in range(4):
        clock.now += 1.0
        b.step()
    assert b.leading
    ids = [m.id for m in sent(beat_app)]
    # Then every tick of the 9 seconds was sent exactly once, the missed ones by b (catch_up="all")
    assert len(ids) == len(set(ids)) == 9
    assert ids == [tick_id("every-second", T0_MS + k * 1000) for k in range(1, 10)]


def test_a_replica_that_still_believes_it_leads_cannot_send_a_tick_twice(beat_app: App) -> None:
    clock = Clock(T0_MS / 1000)
    a, b = replica(beat_app, clock, "a"), replica(beat_app, clock, "b")
    a.step()
    clock.now += 4.0  # a's lease ran out while it was paused
    b.step()  # b takes over and sends the missed ticks
    assert b.leading
    a._lease_checked = clock.now  # a wakes up believing it still leads (its next renewal is not due)
    a.step()
    ids = [m.id for m in sent(beat_app)]
    assert len(ids) == len(set(ids)) == 4
    assert not a.leading, "a refusal to fire makes a ask for the lease again"


def test_a_fired_tick_carries_its_entry_and_scheduled_time(beat_app: App) -> None:
    clock = Clock(T0_MS / 1000 + 0.2)
    beat = replica(beat_app, clock, "a")
    beat.step()
    clock.now += 1.0
    beat.step()
    (message,) = sent(beat_app)
    assert message.task == "beat-unit.ping"
    assert message.queue == "beat"
    assert message.headers["taskfleet-beat-entry"] == "every-second"
    assert message.headers["taskfleet-beat-scheduled"] == datetime.fromtimestamp(T0_MS / 1000 + 1, UTC).isoformat()


def test_a_tick_is_routed_as_apply_async_routes_it(beat_app: App) -> None:
    # Given routes for the ping task, and an entry of a task sent by name whose own queue wins over its route
    beat_app.configure(task_routes={"beat-unit.*": {"queue": "beat", "priority": 4, "compression": "gzip"},
                                    "reports.*": "beat"})
    beat_app.add_periodic_task(1.0, Signature(task="reports.daily", queue="beat", priority=1), name="daily")
    clock = Clock(T0_MS / 1000 + 0.2)
    beat = replica(beat_app, clock, "a")
    beat.step()

    # When one tick of each is sent
    clock.now += 1.0
    beat.step()

    # Then each went where a call would: the route, or the entry's own options over it
    deliveries = beat_app.broker.fetch(["beat"], max_messages=10, timeout_s=0)
    assert sorted((m.task, m.priority, m.compression) for m in (
        Message.decode(d.data, accept=frozenset({"json"})) for d in deliveries)) == [
        ("beat-unit.ping", 4, "gzip"), ("reports.daily", 1, None)]


def test_an_on_time_tick_that_a_long_catch_up_of_another_entry_made_late_is_skipped_under_catch_up_none() -> None:
    # Given an entry that catches up all missed ticks and one that catches up none, and a store that takes 0.2 s to
    # send each tick
    reset_beat_state()
    app = App("beat-unit", broker="memory://", default_queue="beat")
    app.add_periodic_task(1.0, Signature(task="all"), name="all", catch_up="all")
    app.add_periodic_task(1.0, Signature(task="none"), name="none", catch_up="none")
    clock = Clock(T0_MS / 1000)
    beat = replica(app, clock, "a", lease_s=30.0)
    beat.step()
    fire = beat.store.fire

    def slow_fire(tick: Tick) -> bool:
        clock.now += 0.2
        return fire(tick)

    beat.store.fire = slow_fire  # type: ignore[method-assign]
    # When beat pauses 5.1 s and then sends the five missed ticks of "all" (1 s) before it looks at "none"
    clock.now += 5.1
    beat.step()
    # Then the tick of "none" that was 0.1 s late when the pass began, but 1.1 s late after the catch-up, is skipped;
    # the next one, due by then and on time, is sent
    scheduled = [(m.task, m.headers["taskfleet-beat-scheduled"]) for m in sent(app)]
    at = [datetime.fromtimestamp(T0_MS / 1000 + k, UTC).isoformat() for k in range(7)]
    assert scheduled == [("all", at[k]) for k in range(1, 6)] + [("none", at[6])]
    reset_beat_state()


def test_under_catch_up_none_a_tick_made_late_by_a_slow_broker_call_is_skipped_not_sent_late() -> None:
    # Given an entry that catches up no missed tick, and a store whose skip takes 0.6 s
    reset_beat_state()
    app = App("beat-unit", broker="memory://", default_queue="beat")
    app.add_periodic_task(1.0, Signature(task="none"), name="none", catch_up="none")
    clock = Clock(T0_MS / 1000)
    beat = replica(app, clock, "a", lease_s=30.0)
    beat.step()
    skip = beat.store.skip

    def slow_skip(entry: str, up_to_ms: int) -> None:
        clock.now += 0.6
        skip(entry, up_to_ms)

    beat.store.skip = slow_skip  # type: ignore[method-assign]
    # When beat pauses 3.2 s: ticks 1 and 2 are missed, tick 3 is 0.2 s late when planned but 0.8 s late once the
    # missed ones are skipped
    clock.now += 3.2
    beat.step()
    # Then tick 3 is skipped too; nothing went out later than the grace
    assert sent(app) == []
    # And the next tick goes out on time
    clock.now = T0_MS / 1000 + 4.1
    beat.step()
    assert [m.headers["taskfleet-beat-scheduled"] for m in sent(app)] == [
        datetime.fromtimestamp(T0_MS / 1000 + 4, UTC).isoformat()]
    reset_beat_state()


# -- declaring periodic tasks ---------------------------------------------------------------------------------------


def test_periodic_tasks_are_declared_by_call_decorator_or_config() -> None:
    app = App("billing", timezone="Europe/Berlin", beat_schedule=[
        {"name": "nightly", "task": "billing.close_books", "schedule": "0 2 * * *", "args": [2024],
         "queue": "books", "options": {"priority": 7, "catch_up": "all"}},
    ])

    @app.task
    def report(region: str) -> None: ...

    @app.periodic(cron="*/5 * * * *", queue="maintenance")
    def cleanup() -> None: ...

    app.add_periodic_task(crontab(minute="0", hour="10,17"), report.s("eu"), name="daily-report")
    app.add_periodic_task(timedelta(seconds=30), report.s("us"), name="every-30s", catch_up="none")

    entries = app.periodic_tasks
    assert set(entries) == {"nightly", "billing.cleanup", "daily-report", "every-30s"}
    assert entries["nightly"].signature == Signature(task="billing.close_books", args=(2024,), queue="books",
                                                     priority=7)
    assert entries["nightly"].catch_up == "all"
    assert entries["billing.cleanup"].schedule == crontab(minute="*/5")
    assert app.tasks["billing.cleanup"].queue == "maintenance"
    assert entries["daily-report"].signature.args == ("eu",)
    assert entries["every-30s"].schedule == Every(30.0)
    assert app.timezone == "Europe/Berlin"


@pytest.mark.parametrize(
    "config",
    [
        [{"name": "x", "task": "t"}],  # no schedule
        [{"name": "x", "task": "t", "schedule": 5, "colour": "red"}],  # unknown key
        [{"name": "x", "task": "t", "schedule": 5, "options": {"countdown": 3}}],  # unknown option
        [{"name": "x", "task": "t", "schedule": 5, "options": {"expires_s": 60}}],  # the option is "expires"
        [{"name": "x", "task": "t", "schedule": 5, "options": {"catch_up": "some"}}],  # unknown policy
        [{"name": "bad name!", "task": "t", "schedule": 5}],
    ],
    ids=["no-schedule", "unknown-key", "unknown-option", "expires-in-seconds", "unknown-policy", "bad-name"],
)
def test_a_bad_declarative_schedule_is_a_configuration_error(config: list[dict[str, object]]) -> None:
    with pytest.raises(ConfigurationError):
        App("x", beat_schedule=config)


def test_expires_is_named_as_in_apply_async_wherever_a_periodic_call_is_declared() -> None:
    app = App("x", beat_schedule=[{"name": "config", "task": "t", "schedule": 5, "options": {"expires": 60}}])
    app.add_periodic_task(5, Signature(task="t"), name="call", expires=30)

    assert app.periodic_tasks["config"].signature.expires == 60
    assert app.periodic_tasks["call"].signature.expires == 30
    assert Signature(task="t").set(expires=10).to_dict()["expires"] == 10
    assert Signature.from_dict({"task": "t", "expires": 10}) == Signature(task="t", expires=10)
    with pytest.raises(ConfigurationError, match="expires must be > 0"):
        Signature(task="t", expires=0)


def test_a_periodic_signature_with_workflow_options_is_a_configuration_error() -> None:
    app = App("x")
    for signature in (Signature(task="t").link(Signature(task="cb")), Signature(task="t", countdown=5),
                      Signature(task="t", task_id="fixed")):
        with pytest.raises(ConfigurationError, match="plain call"):
            app.add_periodic_task(5, signature, name="call")


def test_an_entry_name_used_twice_is_a_configuration_error() -> None:
    app = App("x")
    app.add_periodic_task(5, Signature(task="a"), name="dup")
    with pytest.raises(ConfigurationError, match="twice"):
        app.add_periodic_task(6, Signature(task="a"), name="dup")


def test_an_unknown_time_zone_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="time zone"):
        App("x", timezone="Europe/Atlantis")


def test_a_signature_is_frozen_plain_data() -> None:
    app = App("x")

    @app.task(queue="q", priority=3)
    def add(a: int, b: int) -> int:
        return a + b

    sig = add.s(1, b=2)
    assert sig == Signature(task="x.add", args=(1,), kwargs={"b": 2})
    assert Signature.from_dict(sig.to_dict()) == sig
    assert sig.set(queue="other").queue == "other"
    with pytest.raises(AttributeError):
        sig.task = "y"  # type: ignore[misc]


def test_beat_list_prints_each_entry_with_its_next_five_fire_times() -> None:
    # a subprocess: the CLI configures process-wide logging, which must not leak into other tests
    done = subprocess.run([sys.executable, "-m", "taskfleet", "beat", "-A", "tests.support.beat:app", "--list"],
                          capture_output=True, text=True, timeout=60, check=False,
                          cwd=Path(__file__).resolve().parents[2])

    assert done.returncode == 0, done.stderr
    for entry in ("every-1s-last", "every-1s-all", "every-1s-none"):
        block = done.stdout.split(f"{entry}:", 1)[1].splitlines()[1:6]
        assert len(block) == 5
        assert all(line.strip().endswith("+00:00") for line in block), block
