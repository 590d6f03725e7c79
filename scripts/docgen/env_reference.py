"""The environment variables section of docs/configuration.md: the module-level ``ENV_*`` constants of the
``taskfleet`` packages (found by parsing, not importing, each module), the settings they feed and what reads them."""

from __future__ import annotations

import argparse
import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

from docgen.markdown import row
from docgen.sections import SECTIONS
from docgen.setters import setters_of
from docgen.source import assignments

#: Packages scanned for ``ENV_*`` constants.
PACKAGES = ("taskfleet", "taskfleet.brokers", "taskfleet.backends", "taskfleet.worker", "taskfleet.operator",
            "taskfleet.cli")


def module_trees(package: str) -> Iterator[tuple[str, ast.Module]]:
    """(module name, syntax tree) of each file of ``package``, parsed without importing it."""
    folder = Path(str(importlib.import_module(package).__file__)).parent
    for path in sorted(folder.glob("*.py")):
        module = package if path.stem == "__init__" else f"{package}.{path.stem}"
        yield module, ast.parse(path.read_text(encoding="utf-8"))


def env_constants() -> list[tuple[str, str, str]]:
    """(module, constant, value) of every module-level ``ENV_* = "TASKFLEET_..."``."""
    found = []
    for package in PACKAGES:
        for module, tree in module_trees(package):
            for name, _, value in assignments(tree.body):
                if name.startswith("ENV_") and isinstance(value, ast.Constant) and isinstance(value.value, str):
                    found.append((module, name, value.value))
    return sorted(found, key=lambda entry: entry[2])


def readers_of(constant: str) -> list[str]:
    """Functions that look ``constant`` up in an environment mapping (``environ.get(C)`` or ``environ[C]``)."""
    readers = []
    for package in PACKAGES:
        for module, tree in module_trees(package):
            for func in ast.walk(tree):
                if not isinstance(func, ast.FunctionDef):
                    continue
                for node in ast.walk(func):
                    key = (node.args[0] if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                           and node.func.attr == "get" and node.args else
                           node.slice if isinstance(node, ast.Subscript) else None)
                    if isinstance(key, ast.Name) and key.id == constant:
                        readers.append(f"`{module}.{func.name}()`")
                        break
    return list(dict.fromkeys(readers))


def env_section(parser: argparse.ArgumentParser) -> list[str]:
    """The "Environment variables" section: each ``ENV_*`` constant, the settings it feeds and what reads it."""
    from taskfleet.settings import settings_from_env

    app_setters = setters_of(SECTIONS[0], parser)
    by_keyword = {label: name for name, labels in app_setters.items() for label in labels}
    fed_by_env: dict[str, list[str]] = {}
    for section in SECTIONS:
        for name, labels in setters_of(section, parser).items():
            for label in labels:
                if label.startswith("`TASKFLEET_"):
                    fed_by_env.setdefault(label.strip("`"), []).append(f"`{section.cls}.{name}`")
    lines = ["## Environment variables", "",
             "The SDK never reads the environment: `App(...)` takes only keyword arguments, and an entrypoint that "
             "wants the variables passes `App(name, **taskfleet.settings_from_env(os.environ))`. The `taskfleet` "
             "commands are entrypoints: `worker` and `beat` apply these variables over the app's own settings and "
             "their flags over both; `call`, `queues` and `purge` use their flags, then these variables.", "",
             "| variable | constant | sets | read by |", "|---|---|---|---|"]
    for module, constant, value in env_constants():
        sets = [f"`App({k}=)` → `AppSettings.{by_keyword.get(f'`App({k}=)`', k)}`"
                for k in settings_from_env({value: "x"})]
        sets += fed_by_env.get(value, [])
        lines.append(row([f"`{value}`", f"`{module}.{constant}`", ", ".join(sets) or "—",
                          ", ".join(readers_of(constant))]))
    lines += ["", "A health port asked for with `--health-port` or `TASKFLEET_HEALTH_PORT` is served, or the worker or "
              "beat exits 5 (`BAD_CONFIG`) when it is in use. Without either, they serve health checks on port "
              "8000 when they run in a container (`KUBERNETES_SERVICE_HOST` is set or `/.dockerenv` exists), unless "
              "another process holds it: then they run without, and log a warning (a second worker or a beat on "
              "the same machine never fails to start); elsewhere they serve none. On Kubernetes the operator sets "
              "`TASKFLEET_BROKER_URL` (and `TASKFLEET_BROKER_MANAGEMENT_URL` when the TaskQueue names one) in the "
              "worker pods from `spec.broker`; the TaskQueue schema rejects `TASKFLEET_BROKER*` names in "
              "`spec.worker.env`.", ""]
    return lines
