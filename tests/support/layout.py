"""The repository's source layout: four source roots, each holding its part of the one import package ``taskfleet``."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: Source root -> the folder in it that holds its package (``sdk/taskfleet`` is ``taskfleet`` itself).
SOURCE_ROOTS = ("sdk", "worker", "operator", "cli", "dashboard")


def packages_on_disk() -> set[str]:
    """Every package (a folder with an ``__init__.py``) below the source roots, by import name."""
    found: set[str] = set()
    for root in SOURCE_ROOTS:
        for init in (REPO / root).rglob("__init__.py"):
            found.add(".".join(init.parent.relative_to(REPO / root).parts))
    return found


def packages_listed() -> set[str]:
    """The packages ``pyproject.toml`` tells setuptools to install."""
    with (REPO / "pyproject.toml").open("rb") as f:
        return set(tomllib.load(f)["tool"]["setuptools"]["packages"])
