"""Reading a module's source: its syntax tree, its comments by line, and the descriptions written beside names."""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import io
import tokenize
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from docgen.markdown import rst_to_md


@dataclass(frozen=True)
class Source:
    name: str
    tree: ast.Module
    lines: tuple[str, ...]
    comments: dict[int, str]  # line number -> comment text after '#'
    namespace: dict[str, Any]


@functools.cache
def source(module_name: str) -> Source:
    module = importlib.import_module(module_name)
    text = inspect.getsource(module)
    comments = {tok.start[0]: tok.string[1:] for tok in tokenize.generate_tokens(io.StringIO(text).readline)
                if tok.type == tokenize.COMMENT}
    return Source(module_name, ast.parse(text), tuple(text.splitlines()), comments, vars(module))


def comment_of(src: Source, node: ast.stmt) -> str:
    """The ``#:`` lines right above ``node``, else the comment at the end of its line."""
    above: list[str] = []
    line = node.lineno - 1
    while line >= 1 and src.lines[line - 1].strip().startswith("#:"):
        above.insert(0, src.comments[line].removeprefix(":"))
        line -= 1
    if above:
        return rst_to_md(" ".join(above))
    end = node.end_lineno or node.lineno
    return rst_to_md(src.comments.get(end, "")) if not src.lines[end - 1].lstrip().startswith("#") else ""


def assignments(body: Sequence[ast.stmt]) -> Iterator[tuple[str, ast.stmt, ast.expr | None]]:
    """(name, statement, value) of the simple assignments in ``body``."""
    for stmt in body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            yield stmt.target.id, stmt, stmt.value
        elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            yield stmt.targets[0].id, stmt, stmt.value


def constant_comment(src: Source, name: str) -> str:
    """The ``#:`` comment of the module-level constant ``name``, following one ``from X import name``."""
    for target, stmt, _ in assignments(src.tree.body):
        if target == name:
            return comment_of(src, stmt)
    for stmt in src.tree.body:
        if isinstance(stmt, ast.ImportFrom) and stmt.module and any(a.name == name for a in stmt.names):
            return constant_comment(source(stmt.module), name)
    return ""


def class_def(src: Source, name: str) -> ast.ClassDef:
    for node in ast.walk(src.tree):
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    raise LookupError(f"class {name} not found in {src.name}")


def refers_to_a_module(src: Source, node: ast.expr) -> bool:
    """True when ``node`` reads a module (``os.cpu_count()``): its value depends on the machine, not the code."""
    return any(isinstance(n, ast.Name) and isinstance(src.namespace.get(n.id), types.ModuleType)
               for n in ast.walk(node))


def render_default(src: Source, node: ast.expr | None, value: Any, *, shell: bool = False) -> str:
    """A default as Markdown code: its source expression when it depends on the machine, else its value."""
    if node is not None and refers_to_a_module(src, node):
        return f"`{ast.unparse(node)}`"
    if shell and isinstance(value, str):
        return f"`{value}`"
    return f"`{value!r}`"
