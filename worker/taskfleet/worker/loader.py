"""Load the user's ``App`` (``-A``/``--app``) and prepare it for a worker, beat or ``taskfleet check``.

``-A`` takes ``module:attribute`` (a dotted path of attributes: ``web.worker:ext.app``), or a bare ``module``
holding exactly one ``App`` — else its ``taskfleet`` submodule, as Celery finds ``proj/celery.py`` from ``-A proj``.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping
from types import ModuleType

from taskfleet.app import App
from taskfleet.errors import ConfigurationError, TaskfleetError

#: The submodule ``-A proj`` also looks in (``proj/taskfleet.py``, our ``proj/celery.py``).
APP_SUBMODULE = "taskfleet"
#: Set (by the project, e.g. ``os.environ.setdefault`` in ``proj/taskfleet.py``) when the app lives in Django.
ENV_DJANGO_SETTINGS = "DJANGO_SETTINGS_MODULE"


class AppImportError(TaskfleetError):
    """``--app`` could not be imported or does not name an ``App``."""


def load_app(spec: str) -> App:
    """``"tests.tasks:app"`` -> that App; ``"tests.tasks"`` -> the one App defined in that module (or in
    ``tests.tasks.taskfleet``).

    The current directory is searched first, as ``python -m`` does: ``taskfleet worker -A tasks:app`` run next to
    ``tasks.py`` (or in the image's ``/app``) finds it. Console scripts otherwise only search site-packages."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    module_name, _, attr = spec.partition(":")
    if not module_name:
        raise AppImportError(f"--app {spec!r}: expected 'module:attribute' or 'module'")
    module = _import(module_name)
    if attr:
        found: object = module
        for part in attr.split("."):
            found = getattr(found, part, None)
        if not isinstance(found, App):
            raise AppImportError(f"{module_name}:{attr} is not a taskfleet.App (got {type(found).__name__})")
        return found
    apps = _apps_in(module)
    if not apps and hasattr(module, "__path__"):
        submodule = f"{module_name}.{APP_SUBMODULE}"
        if importlib.util.find_spec(submodule) is not None:
            apps = _apps_in(_import(submodule))
    if len(apps) != 1:
        raise AppImportError(f"module {module_name!r} holds {len(apps)} App objects; name one as {module_name}:attr")
    return apps[0]


def prepare_app(app: App, environ: Mapping[str, str]) -> list[str]:
    """Ready ``app`` to run tasks: set Django up when ``DJANGO_SETTINGS_MODULE`` is set (``environ`` is read now,
    after the app module ran), then import the task modules (``App.import_tasks``); returns their names. Raises
    ``AppImportError`` when a task module or the framework cannot be loaded."""
    try:
        if environ.get(ENV_DJANGO_SETTINGS):
            django = importlib.import_module("taskfleet.contrib.django")
            django.worker_fixup(app)
        return app.import_tasks()
    except ImportError as exc:
        raise AppImportError(f"cannot set up Django ({ENV_DJANGO_SETTINGS} is set): {exc}") from exc
    except ConfigurationError as exc:
        raise AppImportError(str(exc)) from exc


def _import(module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except Exception as exc:
        raise AppImportError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from exc


def _apps_in(module: ModuleType) -> list[App]:
    return list(dict.fromkeys(v for v in vars(module).values() if isinstance(v, App)))
