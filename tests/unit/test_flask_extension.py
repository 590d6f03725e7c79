"""``taskfleet.contrib.flask``: the ``Taskfleet`` extension in both of Flask's shapes, its App configured from the Flask
config, and every run of a task inside the Flask app context (real Flask, the in-process ``memory://`` broker)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, current_app, g, has_app_context

from taskfleet import App, ConfigurationError, Task
from taskfleet.contrib.flask import EXTENSION_KEY, FlaskTask, Taskfleet, extension_of
from taskfleet.task import Request


def make_flask_app(name: str = "web", **config: Any) -> Flask:
    flask_app = Flask(name)
    flask_app.config.from_mapping({"TASKFLEET_BROKER_URL": "memory://", "GREETING": "Hello", **config})
    return flask_app


def greeting(name: str) -> str:
    return f"{current_app.config['GREETING']}, {name} (in {current_app.name})"


@pytest.fixture
def ext() -> Iterator[Taskfleet]:
    """An unbound extension, as a module creates it for an application factory."""
    ext = Taskfleet()
    yield ext
    ext.app.close()


# -- the two shapes ----------------------------------------------------------------------------------------------------


def test_taskfleet_of_a_flask_app_names_its_app_after_it_reads_its_config_and_registers_itself() -> None:
    flask_app = make_flask_app("shop", TASKFLEET_DEFAULT_QUEUE="web", TASKFLEET_RESULT_BACKEND="memory://")

    ext = Taskfleet(flask_app)

    assert ext.app.name == "shop"
    assert (ext.app.settings.broker_url, ext.app.settings.result_backend_url) == ("memory://", "memory://")
    assert ext.app.settings.default_queue == "web"
    assert flask_app.extensions[EXTENSION_KEY] is ext
    assert ext.flask_app is flask_app
    assert extension_of(ext.app) is ext


def test_an_unbound_extension_names_its_app_after_the_top_level_package_of_the_module_creating_it(
        ext: Taskfleet) -> None:
    assert ext.app.name == "tests"  # created in tests/unit/test_flask_extension.py; Flask(__name__) there: "tests..."
    assert ext.app.task_cls is FlaskTask


def test_a_task_declared_before_init_app_runs_in_the_context_of_the_app_given_to_init_app_later(
        ext: Taskfleet) -> None:
    # Given a task declared on the unbound extension (a tasks module imported before the factory ran)
    greet = ext.task(greeting)
    assert greet.name == "tests.greeting"

    # When the factory binds the extension
    ext.init_app(make_flask_app("web", GREETING="Bonjour"))

    # Then a call runs in that app's context, outside any context of the caller's
    assert not has_app_context()
    assert greet("Ada") == "Bonjour, Ada (in web)"
    assert not has_app_context()


def test_a_task_declared_on_the_app_before_init_app_runs_in_the_app_context_too(ext: Taskfleet) -> None:
    greet = ext.app.task(greeting)
    ext.init_app(make_flask_app())

    assert isinstance(greet, FlaskTask)
    assert greet("Ada") == "Hello, Ada (in web)"


def test_the_worker_entry_point_runs_the_task_in_the_app_context_with_its_request(ext: Taskfleet) -> None:
    @ext.task(bind=True)
    def who(self: Task[Any]) -> str:
        return f"{self.request.id} in {current_app.name}"

    ext.init_app(make_flask_app())

    assert who.run_with_request(Request(id="t-1", called_directly=False), (), {}) == "t-1 in web"


def test_init_app_on_a_second_flask_app_makes_it_the_one_tasks_run_in_and_configures_the_app_from_it(
        ext: Taskfleet) -> None:
    greet = ext.task(greeting)
    ext.init_app(make_flask_app("first"))

    ext.init_app(make_flask_app("second", GREETING="Hej", TASKFLEET_DEFAULT_QUEUE="second"))

    assert greet("Ada") == "Hej, Ada (in second)"
    assert ext.app.settings.default_queue == "second"


# -- the app context ---------------------------------------------------------------------------------------------------


def test_each_run_gets_a_fresh_app_context_whose_teardown_runs_after_it(ext: Taskfleet) -> None:
    flask_app = make_flask_app()
    torn_down: list[object] = []
    flask_app.teardown_appcontext(lambda exc: torn_down.append(g.get("run")))
    ext.init_app(flask_app)

    @ext.task
    def remember(run: int) -> object:
        previous = g.get("run")
        g.run = run
        return previous

    assert [remember(1), remember(2)] == [None, None]
    assert torn_down == [1, 2]


def test_a_direct_call_inside_a_context_of_the_same_app_runs_in_that_context(ext: Taskfleet) -> None:
    flask_app = make_flask_app()
    ext.init_app(flask_app)

    @ext.task
    def read_g() -> object:
        return g.get("user")

    with flask_app.test_request_context("/"):
        g.user = "ada"
        assert read_g() == "ada"  # the request's g: no second context was pushed


def test_a_direct_call_inside_another_flask_apps_context_runs_in_the_extensions_app(ext: Taskfleet) -> None:
    greet = ext.task(greeting)
    ext.init_app(make_flask_app("web"))

    with make_flask_app("other", GREETING="Hi").app_context():
        assert greet("Ada") == "Hello, Ada (in web)"
        assert current_app.name == "other"


def test_an_exception_in_the_task_propagates_and_reaches_the_teardown(ext: Taskfleet) -> None:
    flask_app = make_flask_app()
    seen: list[BaseException | None] = []
    flask_app.teardown_appcontext(seen.append)
    ext.init_app(flask_app)

    @ext.task
    def fail() -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError, match="missing"):
        fail()
    assert len(seen) == 1
    assert isinstance(seen[0], KeyError)


def test_a_task_run_before_init_app_raises_a_configuration_error_that_says_to_call_it(ext: Taskfleet) -> None:
    greet = ext.task(greeting)

    with pytest.raises(ConfigurationError, match=r"call init_app\(flask_app\)"):
        greet("Ada")


# -- bad setups --------------------------------------------------------------------------------------------------------


def test_an_app_given_to_the_extension_gets_flask_task_as_its_task_class() -> None:
    app = App("billing", broker="memory://")

    ext = Taskfleet(app=app)

    assert ext.app is app
    assert app.task_cls is FlaskTask


def test_an_app_holding_a_task_declared_before_the_extension_is_refused_with_the_tasks_name() -> None:
    app = App("billing", broker="memory://")
    app.task(greeting)

    with pytest.raises(ConfigurationError, match=r"billing\.greeting .*outside the Flask app context"):
        Taskfleet(app=app)


def test_an_app_whose_task_class_is_not_a_flask_task_is_refused() -> None:
    class Audited(Task[Any]):
        pass

    with pytest.raises(ConfigurationError, match="derive it from FlaskTask"):
        Taskfleet(app=App("billing", task_cls=Audited))


def test_a_task_base_that_derives_from_flask_task_is_taken_and_another_is_refused(ext: Taskfleet) -> None:
    class Audited(FlaskTask[Any]):
        pass

    assert isinstance(ext.task(base=Audited)(greeting), Audited)
    with pytest.raises(ConfigurationError, match=r"must derive from taskfleet\.contrib\.flask\.FlaskTask"):
        ext.task(base=Task)(greeting)


def test_an_app_has_one_extension_and_a_flask_app_too(ext: Taskfleet) -> None:
    with pytest.raises(ConfigurationError, match="already has a Taskfleet extension"):
        Taskfleet(app=ext.app)

    flask_app = make_flask_app()
    ext.init_app(flask_app)
    with pytest.raises(ConfigurationError, match="already has a Taskfleet extension"):
        Taskfleet(flask_app)


def test_an_unknown_taskfleet_key_in_the_flask_config_is_named(ext: Taskfleet) -> None:
    with pytest.raises(ConfigurationError, match="TASKFLEET_BROKER"):
        ext.init_app(make_flask_app(TASKFLEET_BROKER="redis://typo:6379/0"))


def test_an_app_without_an_extension_says_how_to_create_one() -> None:
    with pytest.raises(ConfigurationError, match=r"Taskfleet\(flask_app\)"):
        extension_of(App("plain"))


def test_a_dropped_extension_and_its_app_are_freed() -> None:
    # Given an extension bound to a Flask app (a test suite builds one per test)
    flask_app = make_flask_app()
    ext = Taskfleet(flask_app)
    app_ref, ext_ref = weakref.ref(ext.app), weakref.ref(ext)

    # When nothing refers to them any more
    del ext, flask_app
    gc.collect()

    # Then the module's App -> extension table keeps neither alive
    assert app_ref() is None
    assert ext_ref() is None
