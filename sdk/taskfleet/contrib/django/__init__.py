"""Taskfleet for Django projects (docs/django.md): ``pip install 'taskfleet[django]'``.

- ``DjangoTask``: a ``Task`` with ``delay_on_commit`` and ``apply_async_on_commit``, which send once the database
  transaction commits and never when it rolls back; ``App("proj", task_cls=DjangoTask)`` gives every task them.
- ``installed_apps()``: the packages of ``INSTALLED_APPS``, where ``app.autodiscover_tasks()`` looks for ``tasks``
  modules.
- ``worker_fixup(app)``: ``django.setup()`` and database connections that are never shared across ``fork()`` and
  are closed when stale between tasks; ``taskfleet worker`` calls it when ``DJANGO_SETTINGS_MODULE`` is set.

Settings live in ``settings.py`` under the ``TASKFLEET_`` namespace:
``app.config_from_object("django.conf:settings", namespace="TASKFLEET")``.
"""

from __future__ import annotations

from taskfleet.errors import ConfigurationError

try:
    import django
except ImportError as exc:
    raise ConfigurationError("taskfleet.contrib.django needs Django: pip install 'taskfleet[django]'") from exc
if django.VERSION < (4, 2):
    raise ConfigurationError(f"taskfleet.contrib.django needs Django 4.2 or later, found {django.get_version()}")

from taskfleet.contrib.django.discovery import installed_apps
from taskfleet.contrib.django.fixup import worker_fixup
from taskfleet.contrib.django.task import DjangoTask

__all__ = ["DjangoTask", "installed_apps", "worker_fixup"]
