"""``Taskfleet``: the Flask extension, and ``FlaskTask``, the task class that runs each task in the Flask app context.

Both shapes Flask users know work: ``Taskfleet(flask_app)``, or ``ext = Taskfleet()`` at module level and
``ext.init_app(flask_app)`` in an application factory. Tasks may be declared (``@ext.task``, ``@ext.app.task``)
before ``init_app`` is called; they run in the context of the Flask app the extension was last initialised with (or
of the current one, when a direct call happens inside a context of an app using this extension). See docs/flask.md.
"""

from __future__ import annotations

import os
import sys
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, Unpack, cast, overload

from flask import Flask, current_app, has_app_context

from taskfleet.app import App
from taskfleet.canvas.builtins import NAMES as BUILTIN_TASKS
from taskfleet.errors import ConfigurationError
from taskfleet.task import Task, TaskOptionsKwargs

R = TypeVar("R")

#: The key of the extension in ``flask_app.extensions``.
EXTENSION_KEY = "taskfleet"
#: The prefix of the Flask config keys the App reads (``TASKFLEET_BROKER_URL``, ``TASKFLEET_RESULT_BACKEND``, ...).
CONFIG_NAMESPACE = "TASKFLEET"

#: Each App's extension: how a ``FlaskTask`` finds the Flask app it runs in. Weak both ways (the extension holds its
#: App), so a test suite's many extensions and Apps are freed.
_extensions: weakref.WeakKeyDictionary[App, weakref.ref[Taskfleet]] = weakref.WeakKeyDictionary()


class FlaskTask(Task[R]):
    """A task whose every run (by a worker, or a direct call) happens inside its Flask app context, so the body can
    use ``flask.current_app``, ``flask.g`` and extensions bound to the app (a database session, say).

    It is the ``task_cls`` of an extension's App; a ``@ext.task(base=...)`` class must derive from it. The body runs
    in the context; the hooks (``on_success``, ...) and signal receivers run outside it, as with Celery's
    ``FlaskTask``: a hook that needs it enters ``extension_of(self.app).app_context()``."""

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        with extension_of(self.app).app_context():
            return super().__call__(*args, **kwargs)


def extension_of(app: App) -> Taskfleet:
    """The ``Taskfleet`` extension that holds ``app``; ``ConfigurationError`` when none does."""
    ref = _extensions.get(app)
    extension = ref() if ref is not None else None
    if extension is None:
        raise ConfigurationError(f"App {app.name!r} belongs to no Taskfleet extension: create it with "
                                 f"Taskfleet(flask_app) or Taskfleet(app=...)")
    return extension


class Taskfleet:
    """The Flask extension: ``Taskfleet(flask_app)``, or ``ext = Taskfleet()`` then ``ext.init_app(flask_app)``.

    ``ext.app`` is the taskfleet ``App``: ``app`` when given (its ``task_cls`` becomes ``FlaskTask`` unless it
    already derives from it), else a new one named after ``flask_app`` (``flask_app.name``) or, without one, after
    the top-level package of the module creating the extension (``"web"`` for ``web/extensions.py``, which is also
    the name of ``Flask(__name__)`` in ``web/__init__.py``). Task names default to ``"<App name>.<function>"``.

    ``init_app`` configures the App from ``flask_app.config``: the ``TASKFLEET_*`` keys (``TASKFLEET_BROKER_URL``,
    ``TASKFLEET_RESULT_BACKEND``, ...; see ``App.config_from_object``), read once, then. ``ConfigurationError``
    when ``app`` already has an extension or holds a task (declared before) that is not a ``FlaskTask``."""

    def __init__(self, flask_app: Flask | None = None, *, app: App | None = None) -> None:
        if app is None:
            app = App(flask_app.name if flask_app is not None else _caller_package(), task_cls=FlaskTask)
        elif app in _extensions and _extensions[app]() is not None:
            raise ConfigurationError(f"App {app.name!r} already has a Taskfleet extension: use that one")
        _check_app(app)
        self.app = app
        self._flask_app: Flask | None = None
        _extensions[app] = weakref.ref(self)
        if flask_app is not None:
            self.init_app(flask_app)

    def __repr__(self) -> str:
        flask_name = self._flask_app.name if self._flask_app is not None else None
        return f"<Taskfleet app={self.app.name!r} flask_app={flask_name!r}>"

    def init_app(self, flask_app: Flask) -> None:
        """Bind to ``flask_app``: configure the App from its ``TASKFLEET_*`` config keys, register in
        ``flask_app.extensions["taskfleet"]``, and run tasks in its context from now on. Called again with another
        Flask app (a test suite's factory, say), the last one configures the App and hosts the tasks."""
        registered = flask_app.extensions.get(EXTENSION_KEY)
        if registered is not None and registered is not self:
            raise ConfigurationError(f"Flask app {flask_app.name!r} already has a Taskfleet extension: import and "
                                     f"use that one")
        self.app.config_from_object(flask_app.config, namespace=CONFIG_NAMESPACE)
        _check_app(self.app)  # again: TASKFLEET_TASK_CLS may have changed the task class
        flask_app.extensions[EXTENSION_KEY] = self
        self._flask_app = flask_app

    @property
    def flask_app(self) -> Flask:
        """The Flask app last given to ``init_app``; ``ConfigurationError`` before that."""
        if self._flask_app is None:
            raise ConfigurationError(f"the Taskfleet extension of App {self.app.name!r} has no Flask app yet: call "
                                     f"init_app(flask_app) (in the application factory) before running a task")
        return self._flask_app

    @contextmanager
    def app_context(self) -> Iterator[None]:
        """Inside the Flask app context tasks run in: the current one when it is of an app using this extension
        (a direct call in a view keeps the request's ``g``), else a new context of ``flask_app``, popped on exit
        (so ``teardown_appcontext`` functions run after each task)."""
        if has_app_context() and current_app.extensions.get(EXTENSION_KEY) is self:
            yield
            return
        with self.flask_app.app_context():
            yield

    @overload
    def task(self, fn: Callable[..., R], /) -> FlaskTask[R]: ...

    @overload
    def task(
        self, /, *, name: str | None = None, base: type[FlaskTask[Any]] | None = None,
        **options: Unpack[TaskOptionsKwargs],
    ) -> Callable[[Callable[..., R]], FlaskTask[R]]: ...

    def task(
        self, fn: Callable[..., R] | None = None, /, *, name: str | None = None,
        base: type[FlaskTask[Any]] | None = None, **options: Unpack[TaskOptionsKwargs],
    ) -> FlaskTask[R] | Callable[[Callable[..., R]], FlaskTask[R]]:
        """``@ext.task`` or ``@ext.task(queue=..., ...)``: ``ext.app.task`` (the same options) with a ``base``, if
        given, that derives from ``FlaskTask`` (else ``ConfigurationError``)."""
        if base is not None and not (isinstance(base, type) and issubclass(base, FlaskTask)):
            raise ConfigurationError(f"@ext.task(base=) must derive from taskfleet.contrib.flask.FlaskTask, got "
                                     f"{base!r}")

        def register(func: Callable[..., R]) -> FlaskTask[R]:
            # An instance of the App's task_cls or of base: FlaskTask subclasses both (checked above).
            return cast("FlaskTask[R]", self.app.task(name=name, base=base, **options)(func))

        return register(fn) if fn is not None else register


def _check_app(app: App) -> None:
    """Make ``app`` run its tasks in the Flask app context: its ``task_cls`` becomes ``FlaskTask`` when it is the
    plain ``Task``; ``ConfigurationError`` when it is another class, or when a task (but the builtins) is not a
    ``FlaskTask`` (declared before the extension took the App over, or with another ``base=``)."""
    if not issubclass(app.task_cls, FlaskTask):
        if app.task_cls is not Task:
            raise ConfigurationError(f"App {app.name!r} has task_cls={app.task_cls.__qualname__}, which would run "
                                     f"tasks outside the Flask app context: derive it from FlaskTask")
        app.task_cls = FlaskTask
    outside = sorted(name for name, task in app.tasks.items()
                     if name not in BUILTIN_TASKS and not isinstance(task, FlaskTask))
    if outside:
        raise ConfigurationError(f"task(s) {', '.join(outside)} of App {app.name!r} would run outside the Flask app "
                                 f"context: declare them after Taskfleet(app=...), with a base= derived from FlaskTask")


def _caller_package() -> str:
    """The top-level package of the module that called ``Taskfleet()`` (two frames up); for a script, its file's
    stem, as Flask names an app whose import name is ``__main__``."""
    module_globals = sys._getframe(2).f_globals
    module = str(module_globals.get("__name__") or "")
    if module == "__main__" and module_globals.get("__file__"):
        return os.path.splitext(os.path.basename(str(module_globals["__file__"])))[0]
    return module.partition(".")[0] or "flask"
