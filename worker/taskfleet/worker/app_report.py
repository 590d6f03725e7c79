"""What an app holds once loaded: its effective settings (credentials masked), task modules, tasks, beat entries,
the Celery settings found in its configuration, and the problems a start should report (a beat entry naming a task
no module registered). ``taskfleet check`` prints it all; the worker and beat log the tasks and the problems."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from taskfleet.app import App
from taskfleet.config import config_names
from taskfleet.urls import mask_secrets
from taskfleet.worker.logging import Logger

__all__ = ["AppReport", "CeleryFinding", "app_report", "celery_findings", "effective_settings",
           "unregistered_references", "warn_unregistered"]


@dataclass(frozen=True, slots=True)
class CeleryFinding:
    """A Celery setting found in the app's configuration, and what it is in Taskfleet."""

    key: str
    source: str
    explanation: str


@dataclass(frozen=True)
class AppReport:
    name: str
    settings: dict[str, Any]
    modules: list[str]
    tasks: list[str]
    beat_entries: dict[str, str]  # entry name -> task name
    celery: list[CeleryFinding] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "celery": [dataclasses.asdict(c) for c in self.celery]}


def effective_settings(app: App) -> dict[str, Any]:
    """Every ``AppSettings`` field as plain, printable data; every string has its credentials masked."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(app.settings):
        value = getattr(app.settings, f.name)
        if isinstance(value, frozenset):
            value = sorted(value)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        out[f.name] = mask_secrets(value) if isinstance(value, str) else value
    return out


def unregistered_references(app: App) -> list[str]:
    """One line per beat entry or ``task_routes`` name that names a task no imported module registered (it may live
    in another service's code: beat sends it by name, and no worker of this app will run it)."""
    beat = [f"beat entry {name!r} sends {entry.signature.task!r}, which no task module of app {app.name!r} "
            "registers" for name, entry in sorted(app.periodic_tasks.items()) if entry.signature.task not in app.tasks]
    routes = [f"task_routes names {task!r}, which no task module of app {app.name!r} registers"
              for task in app.routes.named_tasks() if task not in app.tasks]
    return beat + routes


def warn_unregistered(app: App, log: Logger) -> None:
    """Log each of ``unregistered_references`` as a warning when a worker or beat starts."""
    for problem in unregistered_references(app):
        log.warning("unregistered task", problem=problem)


def celery_findings(app: App) -> list[CeleryFinding]:
    """Celery's settings in the configuration the app read (outside its namespace, so not applied)."""
    from taskfleet.celery_settings import explain_celery_name  # deferred: only ``taskfleet check`` asks

    found: list[CeleryFinding] = []
    for given, resolved, namespace in app.config_read:
        prefix = f"{namespace}_" if namespace else None
        for key in sorted(config_names(resolved)):
            if prefix is not None and key.startswith(prefix):
                continue  # ours, and applied
            explanation = explain_celery_name(key)
            if explanation is not None:
                found.append(CeleryFinding(key, given if isinstance(given, str) else type(given).__name__,
                                           explanation))
    return found


def app_report(app: App, modules: list[str]) -> AppReport:
    """The report of ``app``, whose task ``modules`` were imported (``taskfleet.worker.loader.prepare_app``)."""
    return AppReport(
        name=app.name, settings=effective_settings(app), modules=modules, tasks=sorted(app.tasks),
        beat_entries={name: entry.signature.task for name, entry in sorted(app.periodic_tasks.items())},
        celery=celery_findings(app), warnings=unregistered_references(app),
    )
