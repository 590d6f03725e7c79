"""Specification of the per-call send options that are not routing: ``serializer=`` (among the app's
``accept_content``) and the publish retry policy (``retry=``, ``retry_policy=``: ``PublishRetry.for_call`` and
``PublishRetry.from_policy``), on every sending path."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from taskfleet import App, Message, chain
from taskfleet.errors import ConfigurationError
from taskfleet.settings import PublishRetry


def _add(x: int, y: int) -> int:
    return x + y


@pytest.fixture
def app() -> Iterator[App]:
    """A fresh app on its own in-memory broker, accepting JSON and msgpack, with ``t.add`` registered."""
    app = App("t", broker=f"memory://{uuid.uuid4().hex}", accept_content={"json", "msgpack"})
    app.task(name="t.add")(_add)
    yield app
    app.close()


def stored(app: App) -> list[bytes]:
    return [d.data for d in app.broker.fetch(["default"], max_messages=100, timeout_s=0)]


class RecordedRetries:
    """Wraps the stub broker's ``enqueue`` to record the ``retry`` each message is given (absent: None); its
    ``enqueue_many`` (``Broker``'s) enqueues each message of a batch with the batch's ``retry``."""

    def __init__(self, app: App, monkeypatch: pytest.MonkeyPatch) -> None:
        self.retries: list[PublishRetry | None] = []
        real = app.broker.enqueue

        def enqueue(*args: Any, retry: PublishRetry | None = None, **kwargs: Any) -> None:
            self.retries.append(retry)
            real(*args, **kwargs)

        monkeypatch.setattr(app.broker, "enqueue", enqueue)


# -- serializer ----------------------------------------------------------------------------------------------------


def test_a_call_may_choose_a_serializer_the_app_accepts(app: App) -> None:
    app.tasks["t.add"].apply_async((1, 2), serializer="msgpack")
    app.tasks["t.add"].s(3, 4).set(serializer="msgpack").delay()
    app.send("t.add", (5, 6), serializer="json")

    data = stored(app)

    assert [d.split(b"\n", 1)[0] for d in data] == [b"application/x-msgpack", b"application/x-msgpack",
                                                     b"application/json"]
    assert [Message.decode(d, accept=app.settings.accept_content).args for d in data] == [(1, 2), (3, 4), (5, 6)]


@pytest.mark.parametrize("send", [
    lambda app: app.tasks["t.add"].apply_async((1, 2), serializer="pickle"),
    lambda app: app.send("t.add", (1, 2), serializer="pickle"),
    lambda app: app.tasks["t.add"].s(1, 2).set(serializer="pickle").delay(),
    lambda app: app.send_many([app.tasks["t.add"].s(1, 2).set(serializer="pickle")]),
])
def test_a_serializer_outside_accept_content_is_a_configuration_error_and_nothing_is_sent(app: App, send: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"'pickle'.*not in the app's accept_content"):
        send(app)

    assert stored(app) == []


def test_an_unknown_serializer_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="unknown serializer 'yaml'"):
        App("t", broker="memory://").signature("t.add").set(serializer="yaml")


def test_a_route_may_choose_the_serializer_and_the_call_wins_over_it(app: App) -> None:
    app.configure(task_routes={"t.*": {"serializer": "msgpack"}})

    app.send("t.add", (1, 2))
    app.send("t.add", (1, 2), serializer="json")

    assert [d.split(b"\n", 1)[0] for d in stored(app)] == [b"application/x-msgpack", b"application/json"]


# -- publish retry policy ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "attempts", "waits_s"),
    [
        # Celery's defaults: 3 retries after the first attempt, 0 s then 0.2 s each
        ({}, 4, [0.0, 0.2, 0.2]),
        ({"max_retries": 0}, 1, []),
        ({"max_retries": 5, "interval_start": 1, "interval_step": 0.5, "interval_max": 2}, 6, [1, 1.5, 2, 2, 2]),
        ({"max_retries": 2, "interval_start": 0.1, "interval_step": 0, "interval_max": 5}, 3, [0.1, 0.1]),
    ],
)
def test_a_celery_retry_policy_maps_onto_publish_retry(policy: dict[str, Any], attempts: int,
                                                       waits_s: list[float]) -> None:
    retry = PublishRetry.from_policy(policy)

    assert retry.max_attempts == attempts
    assert [retry.delay_s(n) for n in range(1, attempts)] == pytest.approx(waits_s)


@pytest.mark.parametrize(("policy", "match"), [
    ({"max_retries": None}, "a publish must end"),
    ({"max_retries": -1}, "max_retries"),
    ({"interval_min": 1}, "unknown retry_policy key.*interval_min"),
    ({"interval_step": -1}, "backoffs must be >= 0"),
])
def test_a_bad_retry_policy_is_a_configuration_error(policy: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        PublishRetry.from_policy(policy)


@pytest.mark.parametrize(("retry", "policy", "expected"), [
    (True, None, None),  # the app's publish_retry
    (False, None, PublishRetry(max_attempts=1)),
    (False, {"max_retries": 9}, PublishRetry(max_attempts=1)),  # no retry wins
    (True, {"max_retries": 1, "interval_start": 0.5},
     PublishRetry(max_attempts=2, backoff_s=0.5, backoff_step_s=0.2, backoff_max_s=0.2)),
])
def test_retry_and_retry_policy_give_one_calls_policy(retry: bool, policy: dict[str, Any] | None,
                                                      expected: PublishRetry | None) -> None:
    assert PublishRetry.for_call(retry, policy) == expected


def test_every_sending_path_hands_its_calls_retry_policy_to_the_broker(app: App,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    recorded = RecordedRetries(app, monkeypatch)
    add = app.tasks["t.add"]
    once = PublishRetry(max_attempts=1)
    policy = {"max_retries": 1, "interval_start": 0, "interval_step": 1, "interval_max": 1}
    twice = PublishRetry.from_policy(policy)

    add.delay(1, 2)
    add.apply_async((1, 2), retry=False)
    app.send("t.add", (1, 2), retry_policy=policy)
    add.s(1, 2).apply_async(retry=False)
    chain(add.s(1, 2), add.s(3)).apply_async(retry_policy=policy)
    app.send_many([add.s(1, 2), add.s(3, 4)], retry=False)

    assert recorded.retries == [None, once, twice, once, twice, once, once]
    assert len(stored(app)) == 7
