"""docs/configuration.md and docs/cli.md are generated from the code and must match what the generator writes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gen-config-reference.py"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config_reference", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


GENERATOR = _generator()


@pytest.mark.parametrize("path", [GENERATOR.CONFIG_DOC, GENERATOR.CLI_DOC])
def test_the_committed_reference_is_what_the_generator_writes(path: str) -> None:
    # Given the reference as generated from the code today
    expected = GENERATOR.render_all()[0][path]

    # When it is compared with the committed file
    committed = (REPO / path).read_text(encoding="utf-8")

    # Then they are the same
    assert committed == expected, f"{path} is stale: run {GENERATOR.REGENERATE}"


def test_the_output_does_not_depend_on_the_terminal_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    narrow = GENERATOR.render_all()[0]
    monkeypatch.setenv("COLUMNS", "250")

    assert GENERATOR.render_all()[0] == narrow


def test_every_settings_field_has_a_row() -> None:
    import dataclasses

    text = GENERATOR.render_all()[0][GENERATOR.CONFIG_DOC]
    for section in GENERATOR.SECTIONS:
        cls = GENERATOR.source(section.module).namespace[section.cls]
        for field in dataclasses.fields(cls):
            assert f"| `{field.name}` |" in text, f"{section.cls}.{field.name} has no row"


def test_every_settings_field_has_a_description() -> None:
    # Given the settings dataclasses as documented today
    missing = GENERATOR.render_all()[1]

    # Then each field has a description: a `#:` comment above it, the comment on its line, or the `#:` comment of
    # the DEFAULT_* constant it defaults to
    assert missing == [], f"fields without a description (write a `#:` comment above each): {', '.join(missing)}"
