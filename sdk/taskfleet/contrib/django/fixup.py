"""``worker_fixup``: what ``taskfleet worker`` (and ``beat``, ``check``) do for a Django project, called by the
worker's loader when ``DJANGO_SETTINGS_MODULE`` is set, before the app's tasks are imported.

Celery does the same in ``celery.fixups.django``; the differences are in docs/django.md.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

import django
from django.core.exceptions import ImproperlyConfigured

from taskfleet import signals
from taskfleet.contrib.django import connections
from taskfleet.errors import ConfigurationError
from taskfleet.states import State

if TYPE_CHECKING:
    from taskfleet.app import App

_lock = threading.Lock()
#: The process ``worker_fixup`` ran in (the supervisor): only its forks close its connections first.
_installed_in: int | None = None


def worker_fixup(app: App) -> None:
    """Prepare this process to run ``app``'s tasks with Django: ``django.setup()`` (settings, then every
    installed app and its models), then the connection rules of ``taskfleet.contrib.django.connections``:

    - the database connections this process opened are closed, and again before each fork of a child;
    - each child, when it starts (``worker_process_init``), lets go of any connection it inherited;
    - before and after each task (``task_prerun``, ``task_postrun``) stale and broken connections are closed,
      honouring ``CONN_MAX_AGE`` as Django's request cycle does; after a task that did not succeed, all of them.

    Idempotent: a second call (for this app or another) sets nothing up twice. Django that cannot be set up (no
    such settings module, a broken one, an app that fails to import) raises ``ConfigurationError``."""
    global _installed_in
    setup_django()
    with _lock:
        if _installed_in is not None:
            return
        _installed_in = os.getpid()
        os.register_at_fork(before=_before_fork)
        signals.worker_process_init.connect(_on_worker_process_init, weak=False)
        signals.task_prerun.connect(_on_task_prerun, weak=False)
        signals.task_postrun.connect(_on_task_postrun, weak=False)
    connections.close_all()  # whatever loading the app and its settings opened


def setup_django() -> None:
    """``django.setup()`` (a no-op once done), its failures as ``ConfigurationError``."""
    try:
        django.setup()
    except (ImproperlyConfigured, ImportError) as exc:
        raise ConfigurationError(f"Django could not be set up: {type(exc).__name__}: {exc}") from exc


def _before_fork() -> None:
    if os.getpid() == _installed_in:  # a task that forks in a child keeps its own connections
        connections.close_before_fork()


def _on_worker_process_init(sender: Any = None, **named: Any) -> None:
    connections.forget_inherited()


def _on_task_prerun(sender: Any = None, **named: Any) -> None:
    connections.before_task()


def _on_task_postrun(sender: Any = None, **named: Any) -> None:
    connections.after_task(succeeded=named.get("state") == State.SUCCESS)
