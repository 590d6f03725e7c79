"""Task modules an app imports when a worker, beat or ``taskfleet check`` starts: ``App(include=[...])`` and the
``tasks`` modules of the packages ``app.autodiscover_tasks()`` names (Celery's ``include`` and autodiscovery).

A package without a ``tasks`` module is skipped; an error raised while importing a module that exists (a typo in
``proj/orders/tasks.py``) is raised as ``ConfigurationError`` naming the module, never swallowed.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from taskfleet.errors import ConfigurationError

__all__ = ["Discovery", "PackageSource", "django_installed_apps"]

#: Packages to search: their names, or a function returning them (called when the modules are imported, so it may
#: read a framework's settings that are not loaded yet when the app module is imported).
PackageSource = Iterable[str] | Callable[[], Iterable[str]]


def django_installed_apps() -> list[str]:
    """Django's installed apps (``autodiscover_tasks()`` without packages); ``taskfleet.contrib.django`` is imported
    by name only here, so an app without Django never loads it."""
    try:
        contrib = importlib.import_module("taskfleet.contrib.django")
    except ImportError as exc:
        raise ConfigurationError("autodiscover_tasks() without packages searches Django's INSTALLED_APPS, and Django "
                                 f"is not installed ({exc}); pass the packages to search") from exc
    apps: list[str] = contrib.installed_apps()
    return apps


@dataclass
class Discovery:
    """What one app imports at start: ``include`` modules first, then each autodiscovered package's module."""

    include: list[str] = field(default_factory=list)
    _searches: list[tuple[PackageSource, str]] = field(default_factory=list)
    _imported: list[str] = field(default_factory=list)

    def add_search(self, packages: PackageSource, related_name: str) -> None:
        self._searches.append((packages, related_name))

    def modules(self) -> list[str]:
        """The module names to import: ``include``, then ``<package>.<related_name>`` of every searched package that
        has one, each once, in order."""
        names = list(self.include)
        for packages, related_name in self._searches:
            for package in packages() if callable(packages) else packages:
                candidate = f"{package}.{related_name}"
                if _exists(candidate):
                    names.append(candidate)
        return list(dict.fromkeys(names))

    def import_all(self) -> list[str]:
        """Import ``modules()`` (each at most once per process); the names imported so far, in order."""
        for name in self.modules():
            if name in self._imported:
                continue
            try:
                importlib.import_module(name)
            except Exception as exc:
                raise ConfigurationError(f"cannot import task module {name!r}: {type(exc).__name__}: {exc}") from exc
            self._imported.append(name)
        return list(self._imported)


def _exists(module: str) -> bool:
    """True when ``module`` can be imported: its package imports and the module is there."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError as exc:  # the package itself is missing
        raise ConfigurationError(f"autodiscover_tasks: cannot find the package of {module!r}: {exc}") from exc
    except Exception as exc:  # importing the package failed: say so
        raise ConfigurationError(f"cannot import package of {module!r}: {type(exc).__name__}: {exc}") from exc
