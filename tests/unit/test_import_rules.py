"""The import rules (import-linter contracts in pyproject.toml) cover every module, including tomorrow's.

Most rules say who *may* import something, so a new module is covered without being named. The one rule that lists
modules, broker independence, must list every broker package: this test fails when one is added without it.
"""

from __future__ import annotations

import tomllib
from typing import Any

from tests.support.layout import REPO


def _contracts() -> list[dict[str, Any]]:
    with (REPO / "pyproject.toml").open("rb") as f:
        contracts: list[dict[str, Any]] = tomllib.load(f)["tool"]["importlinter"]["contracts"]
    return contracts


def test_every_broker_package_is_independent_of_the_others() -> None:
    brokers = REPO / "sdk" / "taskfleet" / "brokers"
    on_disk = {f"taskfleet.brokers.{p.parent.name}" for p in brokers.glob("*/__init__.py")}
    independence = next(c for c in _contracts() if c["type"] == "independence" and "brokers" in c["name"].lower())
    assert set(independence["modules"]) == on_disk


def test_rules_are_written_as_who_may_import_not_who_may_not() -> None:
    kinds = {c["type"] for c in _contracts()}
    assert "forbidden" not in kinds, "a forbidden contract lists its sources, so a new module escapes it"


def test_each_client_library_has_a_rule_naming_who_may_import_it() -> None:
    protected = {m for c in _contracts() if c["type"] == "protected" for m in c["protected_modules"]}
    for library in ("redis", "pika", "sqlite3", "kopf", "kubernetes", "rich", "prometheus_client", "structlog",
                    "msgpack", "django", "flask", "opentelemetry"):
        assert library in protected, library
