"""Load the user's ``App`` from ``module:attribute`` or a bare module holding exactly one ``App``."""

from __future__ import annotations

import importlib
import os
import sys

from taskfleet.app import App
from taskfleet.errors import TaskfleetError


class AppImportError(TaskfleetError):
    """``--app`` could not be imported or does not name an ``App``."""


def load_app(spec: str) -> App:
    """``"tests.tasks:app"`` -> that App; ``"tests.tasks"`` -> the one App defined in that module.

    The current directory is searched first, as ``python -m`` does: ``taskfleet worker -A tasks:app`` run next to
    ``tasks.py`` (or in the image's ``/app``) finds it. Console scripts otherwise only search site-packages."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    module_name, _, attr = spec.partition(":")
    if not module_name:
        raise AppImportError(f"--app {spec!r}: expected 'module:attribute' or 'module'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise AppImportError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from exc
    if attr:
        found = getattr(module, attr, None)
        if not isinstance(found, App):
            raise AppImportError(f"{module_name}:{attr} is not a taskfleet.App (got {type(found).__name__})")
        return found
    apps = [v for v in vars(module).values() if isinstance(v, App)]
    if len(apps) != 1:
        raise AppImportError(f"module {module_name!r} holds {len(apps)} App objects; name one as {module_name}:attr")
    return apps[0]
