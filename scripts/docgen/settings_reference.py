"""docs/configuration.md: one table per settings dataclass (``sections.SECTIONS``), then the environment variables.

A field's description is the ``#:`` comment above it (or the comment on its line), else the ``#:`` comment of the
``DEFAULT_*`` constant it defaults to. A field with neither is reported as missing: every setting is documented.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
from typing import Any

from docgen.env_reference import env_section
from docgen.markdown import REGENERATE, anchor, document, generated_notice, row
from docgen.sections import SECTIONS, Section
from docgen.setters import setters_of
from docgen.source import Source, assignments, class_def, comment_of, constant_comment, render_default, source


def type_text(src: Source, annotation: str) -> str:
    """The annotation as written, with a module-level alias (``LogFormat``) spelled out."""
    for name, _, value in assignments(src.tree.body):
        if name == annotation and value is not None:
            return ast.unparse(value)
    return annotation


def default_text(src: Source, f: dataclasses.Field[Any], value_node: ast.expr | None) -> str:
    if f.default_factory is not dataclasses.MISSING:
        return f"`{getattr(f.default_factory, '__name__', 'factory')}()`"
    if f.default is dataclasses.MISSING:
        return "required"
    return render_default(src, value_node, f.default)


def description(src: Source, stmt: ast.stmt, value_node: ast.expr | None) -> str:
    """The comment beside the field, else the ``#:`` comment of the ``DEFAULT_*`` constant it defaults to."""
    text = comment_of(src, stmt)
    if not text and isinstance(value_node, ast.Name):
        text = constant_comment(src, value_node.id)
    return text


def settings_table(section: Section, parser: argparse.ArgumentParser) -> tuple[list[str], list[str]]:
    """The section's lines, and the names of fields without a description."""
    src = source(section.module)
    cls = src.namespace[section.cls]
    nodes = {name: (stmt, value) for name, stmt, value in assignments(class_def(src, section.cls).body)}
    setters = setters_of(section, parser)
    lines = [f"## {section.title}", "", section.intro, "", f"Defined in `{section.module}`.", "",
             "| field | type | default | set with | description |", "|---|---|---|---|---|"]
    missing: list[str] = []
    for f in dataclasses.fields(cls):
        stmt, value_node = nodes[f.name]
        text = description(src, stmt, value_node)
        if not text:
            missing.append(f"{section.cls}.{f.name}")
        lines.append(row([f"`{f.name}`", f"`{type_text(src, str(f.type))}`", default_text(src, f, value_node),
                          ", ".join(setters.get(f.name, [])) or "—", text]))
    return [*lines, ""], missing


def render_configuration(parser: argparse.ArgumentParser) -> tuple[str, list[str]]:
    """docs/configuration.md, and the fields that have no description in the source."""
    lines = ["# Configuration reference", "", generated_notice(), "",
             "Generated from the settings dataclasses (`dataclasses.fields`) and the comments beside their fields in "
             "the source: the `#:` lines above a field or the comment on its line, else the `#:` comment of the "
             f"`DEFAULT_*` constant it defaults to. Regenerate with `{REGENERATE}` after changing a setting; "
             "`tests/unit/test_config_reference.py` fails while this file is stale. \"Set with\" is read from the "
             "code that builds each dataclass. Times are in seconds unless a name says otherwise.", "",
             "Contents: " + ", ".join(f"[{s.cls}](#{anchor(s.title)})" for s in SECTIONS)
             + ", [environment variables](#environment-variables).", ""]
    missing: list[str] = []
    for section in SECTIONS:
        table, gaps = settings_table(section, parser)
        lines += table
        missing += gaps
    lines += env_section(parser)
    return document(lines), missing
