"""The project's Taskfleet app (Celery's ``proj/celery.py``): ``taskfleet worker -A proj`` finds it here."""

import os

from taskfleet import App
from taskfleet.contrib.django import DjangoTask

# The worker reads DJANGO_SETTINGS_MODULE after importing this module: with it set, it runs django.setup() and
# looks after the database connections (taskfleet.contrib.django.worker_fixup) before importing the tasks.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")

# DjangoTask gives every task delay_on_commit() and apply_async_on_commit().
app = App("proj", task_cls=DjangoTask)

# Every TASKFLEET_* setting in settings.py; read on first use, once Django's settings are loaded.
app.config_from_object("django.conf:settings", namespace="TASKFLEET")

# Import the tasks.py module of every app in INSTALLED_APPS when a worker starts.
app.autodiscover_tasks()
