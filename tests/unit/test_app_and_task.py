"""Specification of ``App`` and ``Task`` (taskfleet.app, taskfleet.task) against the in-memory broker."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from taskfleet import (
    App,
    AsyncResult,
    ConfigurationError,
    EncodeError,
    MessageTooLarge,
    State,
    Task,
    TaskNotRegistered,
)
from taskfleet.message import Message


@pytest.fixture
def memory_app() -> Iterator[App]:
    """A fresh App on the in-memory broker and result backend."""
    app = App("t", broker="memory://", result_backend="memory://")
    yield app
    app.close()


def _add(x: int, y: int) -> int:
    return x + y


def _only_message(app: App, queue: str = "default") -> Message:
    """Fetch the one ready message of ``queue`` and decode it."""
    deliveries = app.broker.fetch([queue], max_messages=2, timeout_s=0)
    assert len(deliveries) == 1, f"expected one message on {queue!r}, got {len(deliveries)}"
    return Message.decode(deliveries[0].data, accept=app.settings.accept_content)


# -- registration ------------------------------------------------------------------------------------------------


def test_a_task_name_defaults_to_app_name_dot_function_name(memory_app: App) -> None:
    task = memory_app.task(_add)

    assert task.name == "t._add"
    assert memory_app.tasks["t._add"] is task


def test_name_overrides_the_default_task_name(memory_app: App) -> None:
    task = memory_app.task(name="billing.add")(_add)

    assert task.name == "billing.add"
    assert memory_app.get_task("billing.add") is task


def test_registering_two_functions_under_one_name_is_a_configuration_error(memory_app: App) -> None:
    def other(x: int, y: int) -> int:
        return x - y

    memory_app.task(name="math.op")(_add)

    with pytest.raises(ConfigurationError, match="registered twice"):
        memory_app.task(name="math.op")(other)


def test_registering_the_same_function_twice_is_allowed(memory_app: App) -> None:
    first = memory_app.task(_add)

    second = memory_app.task(_add)

    assert first.fn is second.fn


def test_an_unknown_task_option_is_a_type_error(memory_app: App) -> None:
    with pytest.raises(TypeError):
        memory_app.task(retries=3)  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"soft_time_limit": 10, "time_limit": 10}, "soft_time_limit must be smaller than time_limit"),
        ({"soft_time_limit": 11, "time_limit": 10}, "soft_time_limit must be smaller than time_limit"),
        ({"time_limit": 0}, "time limits must be > 0"),
        ({"priority": 10}, "priority must be 0-9"),
        ({"max_retries": -1}, "max_retries"),
        ({"autoretry_for": (ValueError, "OSError")}, "autoretry_for"),
        ({"queue": "bad queue"}, "invalid queue name"),
    ],
)
def test_impossible_task_options_are_a_configuration_error(
    memory_app: App, options: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigurationError, match=match):
        memory_app.task(**options)(_add)


def test_get_task_of_an_unknown_name_raises_task_not_registered(memory_app: App) -> None:
    with pytest.raises(TaskNotRegistered, match=r"'t\.nope' is not registered in app 't'"):
        memory_app.get_task("t.nope")


# -- calling -----------------------------------------------------------------------------------------------------


def test_a_direct_call_runs_in_process_and_sends_nothing(memory_app: App) -> None:
    add = memory_app.task(_add)

    assert add(2, 3) == 5
    assert memory_app.broker.queue_depth("default").total == 0


def test_a_bound_task_sees_a_direct_call_request(memory_app: App) -> None:
    @memory_app.task(bind=True)
    def whoami(self: Task[Any]) -> tuple[bool, str | None]:
        return self.request.called_directly, self.request.id

    assert whoami() == (True, None)


def test_delay_enqueues_on_the_tasks_queue_and_returns_a_pending_result(memory_app: App) -> None:
    add = memory_app.task(queue="math")(_add)

    result = add.delay(2, 3)

    assert isinstance(result, AsyncResult)
    assert result.state is State.PENDING
    assert memory_app.broker.queue_depth("math").ready == 1
    message = _only_message(memory_app, "math")
    assert (message.id, message.task, message.args, message.queue) == (result.id, "t._add", (2, 3), "math")


def test_delay_without_a_task_queue_uses_the_apps_default_queue() -> None:
    app = App("t", broker="memory://", default_queue="work")
    add = app.task(_add)

    add.delay(1, 2)

    assert app.broker.queue_depth("work").ready == 1


def test_delay_passes_keyword_arguments(memory_app: App) -> None:
    add = memory_app.task(_add)

    add.delay(x=1, y=2)

    assert dict(_only_message(memory_app).kwargs) == {"x": 1, "y": 2}


# -- apply_async options -----------------------------------------------------------------------------------------


def test_countdown_holds_the_message_in_the_delayed_set(memory_app: App) -> None:
    add = memory_app.task(_add)

    add.apply_async((1, 2), countdown=60)

    depth = memory_app.broker.queue_depth("default")
    assert (depth.ready, depth.delayed) == (0, 1)


def test_countdown_asks_the_broker_to_delay_by_that_many_seconds(
    memory_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    add = memory_app.task(_add)
    delays: list[float] = []
    broker = memory_app.broker
    real_enqueue = broker.enqueue

    def spy(queue: str, message_id: str, data: bytes, *, priority: int = 0, delay_s: float = 0.0) -> None:
        delays.append(delay_s)
        real_enqueue(queue, message_id, data, priority=priority, delay_s=delay_s)

    monkeypatch.setattr(broker, "enqueue", spy)

    add.apply_async((1, 2), countdown=60)

    assert delays == [pytest.approx(60, abs=1)]


def test_an_eta_datetime_is_stored_as_unix_seconds(memory_app: App) -> None:
    add = memory_app.task(_add)
    eta = datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)  # in the past, so the message is ready to fetch

    add.apply_async((1, 2), eta=eta)

    assert _only_message(memory_app).eta == eta.timestamp()


def test_a_naive_eta_is_taken_as_utc(memory_app: App) -> None:
    add = memory_app.task(_add)

    add.apply_async((1, 2), eta=datetime(2020, 1, 2, 3, 4, 5))  # naive on purpose

    assert _only_message(memory_app).eta == datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()


def test_a_future_eta_holds_the_message_in_the_delayed_set(memory_app: App) -> None:
    add = memory_app.task(_add)

    add.apply_async((1, 2), eta=datetime.now(UTC) + timedelta(hours=1))

    assert memory_app.broker.queue_depth("default").delayed == 1


def test_expires_in_seconds_is_counted_from_now(memory_app: App) -> None:
    add = memory_app.task(_add)
    before = time.time()

    add.apply_async((1, 2), expires=30)

    expires = _only_message(memory_app).expires
    assert expires is not None
    assert before + 30 <= expires <= time.time() + 30


def test_expires_as_a_datetime_is_stored_as_unix_seconds(memory_app: App) -> None:
    add = memory_app.task(_add)
    when = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)

    add.apply_async((1, 2), expires=when)

    assert _only_message(memory_app).expires == when.timestamp()


def test_the_tasks_expires_option_is_the_default_for_apply_async(memory_app: App) -> None:
    add = memory_app.task(expires=3600)(_add)
    before = time.time()

    add.delay(1, 2)

    expires = _only_message(memory_app).expires
    assert expires is not None
    assert expires >= before + 3600


@pytest.mark.parametrize(
    ("options", "field", "value"),
    [
        ({"priority": 7}, "priority", 7),
        ({"task_id": "my-id-1"}, "id", "my-id-1"),
        ({"headers": {"trace": "abc"}}, "headers", {"trace": "abc"}),
    ],
)
def test_apply_async_options_land_in_the_message(
    memory_app: App, options: dict[str, Any], field: str, value: object
) -> None:
    add = memory_app.task(_add)

    add.apply_async((1, 2), **options)

    assert getattr(_only_message(memory_app), field) == value


def test_apply_async_queue_sends_to_that_queue(memory_app: App) -> None:
    add = memory_app.task(queue="math")(_add)

    add.apply_async((1, 2), queue="urgent")

    assert memory_app.broker.queue_depth("math").total == 0
    assert _only_message(memory_app, "urgent").queue == "urgent"


def test_the_tasks_priority_is_the_default_for_apply_async(memory_app: App) -> None:
    add = memory_app.task(priority=3)(_add)

    add.delay(1, 2)

    assert _only_message(memory_app).priority == 3


def test_task_id_is_the_id_of_the_returned_result(memory_app: App) -> None:
    add = memory_app.task(_add)

    assert add.apply_async((1, 2), task_id="chosen").id == "chosen"


def test_countdown_and_eta_together_are_refused(memory_app: App) -> None:
    add = memory_app.task(_add)

    with pytest.raises(ValueError, match="countdown or eta"):
        add.apply_async((1, 2), countdown=5, eta=datetime.now(UTC))


def test_an_unknown_apply_async_option_is_a_type_error(memory_app: App) -> None:
    add = memory_app.task(_add)

    with pytest.raises(TypeError):
        add.apply_async((1, 2), exchange="tasks")  # type: ignore[call-arg]


@pytest.mark.parametrize("priority", [-1, 10])
def test_a_priority_outside_0_to_9_is_refused_when_sending(memory_app: App, priority: int) -> None:
    add = memory_app.task(_add)

    with pytest.raises(ValueError, match="priority must be 0-9"):
        add.apply_async((1, 2), priority=priority)


def test_an_invalid_queue_is_refused_when_sending(memory_app: App) -> None:
    add = memory_app.task(_add)

    with pytest.raises(ConfigurationError, match="invalid queue name"):
        add.apply_async((1, 2), queue="not a queue")


# -- refusals when publishing ------------------------------------------------------------------------------------


def test_delay_without_a_broker_names_the_environment_variable() -> None:
    app = App("nobroker")
    add = app.task(_add)

    with pytest.raises(ConfigurationError, match="TASKFLEET_BROKER_URL"):
        add.delay(1, 2)


def test_a_message_over_max_message_bytes_is_refused_and_not_enqueued() -> None:
    app = App("t", broker="memory://", max_message_bytes=1024)
    echo = app.task(name="t.echo")(lambda payload: payload)

    with pytest.raises(MessageTooLarge, match="max_message_bytes=1024"):
        echo.delay("x" * 2000)

    assert app.broker.queue_depth("default").total == 0


def test_an_unserializable_argument_is_an_encode_error_and_not_enqueued(memory_app: App) -> None:
    echo = memory_app.task(name="t.echo")(lambda payload: payload)

    with pytest.raises(EncodeError, match="not JSON serializable"):
        echo.delay(object())

    assert memory_app.broker.queue_depth("default").total == 0


# -- sending by name ---------------------------------------------------------------------------------------------


def test_send_by_name_works_for_a_task_this_app_does_not_know(memory_app: App) -> None:
    result = memory_app.send("billing.charge", args=(42,), kwargs={"currency": "eur"}, queue="billing")

    message = _only_message(memory_app, "billing")
    assert (message.id, message.task, message.args, dict(message.kwargs)) == (
        result.id, "billing.charge", (42,), {"currency": "eur"}
    )


# -- results -----------------------------------------------------------------------------------------------------


def test_get_without_a_result_backend_is_a_configuration_error() -> None:
    app = App("t", broker="memory://")
    add = app.task(_add)
    result = add.delay(1, 2)

    with pytest.raises(ConfigurationError, match="no result backend"):
        result.get(timeout=0)


def test_app_async_result_is_a_handle_on_that_task_id(memory_app: App) -> None:
    assert memory_app.AsyncResult("abc") == AsyncResult("abc", app=memory_app)


# -- layering ----------------------------------------------------------------------------------------------------


def test_importing_taskfleet_imports_neither_the_worker_nor_the_cli() -> None:
    code = (
        "import taskfleet, sys; "
        "assert not any(m.startswith(('taskfleet.worker', 'taskfleet.cli')) for m in sys.modules), "
        "sorted(m for m in sys.modules if m.startswith('taskfleet'))"
    )

    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)

    assert completed.returncode == 0, completed.stderr
