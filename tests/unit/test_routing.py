"""Specification of routing (taskfleet.routing): ``App(task_routes=)`` in Celery's forms, the precedence of call
options > routes > the task decorator > the app's defaults, and that every sending path routes the same way
(``delay``/``apply_async``, ``app.send`` by name, ``send_many``, workflows and their follow-ups, beat's ticks)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from taskfleet import App, Message, chain, group
from taskfleet.canvas.codec import node_from_dict
from taskfleet.canvas.planner import Planner
from taskfleet.errors import ConfigurationError
from taskfleet.routing import Route, Routes
from taskfleet.task import Task


def _add(x: int, y: int) -> int:
    return x + y


def make_app(**options: Any) -> App:
    """A fresh App on its own in-memory broker, with ``billing.charge`` (queue "payments", priority 5) and
    ``billing.plain`` (no options) registered."""
    app = App("billing", broker=f"memory://{uuid.uuid4().hex}", **options)
    app.task(name="billing.charge", queue="payments", priority=5)(_add)
    app.task(name="billing.plain")(_add)
    return app


@pytest.fixture
def apps() -> Iterator[list[App]]:
    made: list[App] = []
    yield made
    for app in made:
        app.close()


def sent(app: App) -> list[Message]:
    """Every message stored on any queue of ``app``'s broker, decoded."""
    broker = app.broker
    deliveries = [d for queue in broker.queues() for d in broker.fetch([queue], max_messages=1000, timeout_s=0)]
    return [Message.decode(d.data, accept=app.settings.accept_content) for d in deliveries]


def one_sent(app: App) -> Message:
    [message] = sent(app)
    return message


# -- precedence: call > route > task decorator > app default ------------------------------------------------------

ROUTES = {"billing.charge": {"queue": "routed", "priority": 2}, "billing.plain": "routed-plain"}


@pytest.mark.parametrize(
    ("task", "routes", "call", "expected"),
    [
        # the app's default queue and priority 0, when nothing else speaks
        ("billing.plain", None, {}, ("default", 0)),
        # the task decorator's
        ("billing.charge", None, {}, ("payments", 5)),
        # a route wins over the decorator, field by field
        ("billing.charge", ROUTES, {}, ("routed", 2)),
        ("billing.charge", {"billing.charge": {"priority": 7}}, {}, ("payments", 7)),
        ("billing.charge", {"billing.charge": "routed"}, {}, ("routed", 5)),
        ("billing.plain", ROUTES, {}, ("routed-plain", 0)),
        # the call wins over the route
        ("billing.charge", ROUTES, {"queue": "mine"}, ("mine", 2)),
        ("billing.charge", ROUTES, {"priority": 9}, ("routed", 9)),
        ("billing.charge", ROUTES, {"queue": "mine", "priority": 0}, ("mine", 0)),
        ("billing.plain", None, {"queue": "mine", "priority": 1}, ("mine", 1)),
        # a route that does not match leaves the decorator's
        ("billing.charge", {"reports.*": "slow"}, {}, ("payments", 5)),
    ],
)
def test_call_options_win_over_routes_which_win_over_the_task_which_wins_over_the_app(
    apps: list[App], task: str, routes: Any, call: dict[str, Any], expected: tuple[str, int],
) -> None:
    app = make_app(task_routes=routes)
    apps.append(app)

    app.tasks[task].apply_async((1, 2), **call)

    message = one_sent(app)
    assert (message.queue, message.priority) == expected


# -- what task_routes takes ---------------------------------------------------------------------------------------


def looked_up(spec: Any, name: str, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None,
              options: Mapping[str, Any] | None = None, task: Task[Any] | None = None) -> Route | None:
    return Routes(spec).lookup(name, args, kwargs or {}, options or {}, task)


@pytest.mark.parametrize(
    ("spec", "name", "queue"),
    [
        ({"billing.*": "emails"}, "billing.send", "emails"),
        ({"billing.*": "emails"}, "billing.invoices.send", "emails"),  # * matches dots too
        ({"billing.*": "emails"}, "reports.billing.send", None),  # a glob matches the whole name
        ({"*.send": "out"}, "billing.send", "out"),
        ({"*.send": "out"}, "billing.sender", None),
        ({"billing.send": "exact", "billing.*": "glob"}, "billing.send", "exact"),
        ({"billing.*": "glob", "billing.send": "exact"}, "billing.send", "exact"),  # exact names first
        ({"billing.*": "first", "billing.s*": "second"}, "billing.send", "first"),  # then patterns in order
        ({re.compile(r"(image|video)\."): "media"}, "video.compress", "media"),
        ({re.compile(r"(image|video)\."): "media"}, "audio.compress", None),
        ({re.compile(r"video"): "media"}, "tasks.video", None),  # a regex matches from the start (re.match)
        ({"billing.send": {"queue": "q", "priority": 3}}, "billing.send", "q"),
        ({"billing.send": None}, "billing.send", None),
        ([{"reports.*": "slow"}, {"billing.*": "emails"}], "billing.send", "emails"),
        ([{"billing.*": "first"}, {"billing.*": "second"}], "billing.send", "first"),
        ((), "billing.send", None),
    ],
)
def test_a_route_is_found_by_exact_name_glob_or_regex(spec: Any, name: str, queue: str | None) -> None:
    route = looked_up(spec, name)

    assert (route.queue if route else None) == queue


def test_a_router_function_is_called_as_celery_calls_it_and_may_answer_a_queue_a_dict_or_none(apps: list[App]) -> None:
    calls: list[tuple[Any, ...]] = []

    def router(name: str, args: Sequence[Any], kwargs: Mapping[str, Any], options: Mapping[str, Any], *,
               task: Task[Any] | None = None, **kw: Any) -> Any:
        calls.append((name, tuple(args), dict(kwargs), dict(options), task.name if task else None))
        if kwargs.get("vip"):
            return {"queue": "vip", "priority": 9}
        return "by-function" if name.endswith("plain") else None

    app = make_app(task_routes=[router, {"billing.*": "fallback"}])
    apps.append(app)

    app.tasks["billing.plain"].apply_async((1, 2), priority=1)
    app.tasks["billing.charge"].apply_async((1,), {"y": 2, "vip": True})
    app.tasks["billing.charge"].delay(1, 2)

    assert calls[0] == ("billing.plain", (1, 2), {}, {"priority": 1}, "billing.plain")
    assert calls[1][:2] == ("billing.charge", (1,))
    assert sorted((m.queue, m.priority) for m in sent(app)) == [("by-function", 1), ("fallback", 5), ("vip", 9)]


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"billing.*": {"queue": "q", "exchange": "billing"}}, "unknown route key.*'exchange'.*no exchanges"),
        ({"billing.*": {"routing_key": "x"}}, "routing_key"),
        ({"billing.*": "bad queue!"}, "invalid queue name"),
        ({"billing.*": {"priority": 10}}, "priority must be 0-9"),
        ({"billing.*": {"priority": True}}, "priority must be 0-9"),
        ({"billing.*": {"serializer": "yaml"}}, "unknown serializer"),
        ({"billing.*": {"compression": "brotli"}}, "unknown compression"),
        ({"billing.*": 42}, "a route is a queue name"),
        ({42: "q"}, "task_routes keys are task names"),
        ("myproj.routers.route_task", "pass the router function itself"),
        (42, "task_routes takes mappings and router functions"),
    ],
)
def test_a_bad_route_is_a_configuration_error_when_the_app_is_made(spec: Any, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        App("t", task_routes=spec)


def test_a_router_functions_bad_answer_is_a_configuration_error_at_the_call(apps: list[App]) -> None:
    app = make_app(task_routes=lambda name, args, kwargs, options, task=None: {"exchange": "x"})
    apps.append(app)

    with pytest.raises(ConfigurationError, match=r"router .* for 'billing\.plain'.*exchange"):
        app.tasks["billing.plain"].delay(1, 2)

    assert sent(app) == []


def test_configure_replaces_the_routes(apps: list[App]) -> None:
    app = make_app(task_routes={"billing.*": "old"})
    apps.append(app)

    app.configure(task_routes={"billing.*": "new"})
    app.tasks["billing.plain"].delay(1, 2)

    assert one_sent(app).queue == "new"
    assert app.tasks["billing.plain"].queue == "new"


# -- every sending path routes the same way ------------------------------------------------------------------------


def test_app_send_routes_a_task_that_is_not_registered_here_by_its_name(apps: list[App]) -> None:
    app = make_app(task_routes={"reports.*": {"queue": "slow", "priority": 2}})
    apps.append(app)

    app.send("reports.monthly", (2024,))

    message = one_sent(app)
    assert (message.task, message.queue, message.priority) == ("reports.monthly", "slow", 2)


def test_send_many_routes_each_call_and_its_own_queue_and_priority_win(apps: list[App]) -> None:
    app = make_app(task_routes={"billing.*": "routed", "reports.*": {"queue": "slow", "priority": 2}})
    apps.append(app)
    plain = app.tasks["billing.plain"]

    app.send_many([plain.s(1, 2), plain.s(3, 4).set(queue="own"), ("reports.daily", (), {})])

    assert sorted((m.task, m.queue, m.priority) for m in sent(app)) == [
        ("billing.plain", "own", 0), ("billing.plain", "routed", 0), ("reports.daily", "slow", 2)]


def test_send_many_options_win_over_routes(apps: list[App]) -> None:
    app = make_app(task_routes={"billing.*": {"queue": "routed", "priority": 2}})
    apps.append(app)

    app.send_many([app.tasks["billing.plain"].s(1, 2)], queue="all-here", priority=8)

    message = one_sent(app)
    assert (message.queue, message.priority) == ("all-here", 8)


def test_every_message_of_a_workflow_is_routed_and_its_follow_ups_keep_the_route(apps: list[App]) -> None:
    # Given routes for billing and reports, and a worker app that has neither the routes nor the tasks
    app = make_app(task_routes={"billing.*": {"queue": "routed", "priority": 3}, "reports.*": "slow"})
    apps.append(app)
    plain = app.tasks["billing.plain"]

    # When a chain of a billing task then a reports task is sent
    chain(plain.s(1, 2), app.signature("reports.total")).apply_async()

    # Then its first message is routed, and the next step it carries was routed when the chain was sent
    first = one_sent(app)
    assert (first.queue, first.priority) == ("routed", 3)
    worker_app = App("other", broker=f"memory://{uuid.uuid4().hex}")
    apps.append(worker_app)
    next_step = first.workflow["chain"][0]  # type: ignore[index]
    assert (next_step["task"], next_step["queue"]) == ("reports.total", "slow")
    follow_up = Planner(worker_app, follow_up=True, parent=first)
    [message] = follow_up.messages(node_from_dict(next_step, app=worker_app), (3,))
    assert message.queue == "slow"


def test_a_groups_members_are_each_routed(apps: list[App]) -> None:
    app = make_app(task_routes={"billing.plain": "plain-q"})
    apps.append(app)

    group(app.tasks["billing.plain"].s(1, 2), app.tasks["billing.charge"].s(3, 4)).apply_async()

    assert sorted(m.queue for m in sent(app)) == ["payments", "plain-q"]


def test_a_workflows_options_win_over_the_routes(apps: list[App]) -> None:
    app = make_app(task_routes={"billing.*": "routed"})
    apps.append(app)

    chain(app.tasks["billing.plain"].s(1, 2), app.tasks["billing.plain"].s()).apply_async(queue="mine")

    assert one_sent(app).queue == "mine"


def test_the_queue_of_a_task_is_its_route(apps: list[App]) -> None:
    app = make_app(task_routes={"billing.charge": "routed"})
    apps.append(app)

    assert (app.tasks["billing.charge"].queue, app.tasks["billing.plain"].queue) == ("routed", "default")
