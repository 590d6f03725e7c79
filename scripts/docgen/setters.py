"""Who sets a settings field: the ``App`` keyword, flag or env var that feeds it, read from the code that builds
its dataclass (``App.__init__``, the CLI handlers)."""

from __future__ import annotations

import argparse
import ast
import dataclasses
from collections.abc import Iterator

from docgen.cli_reference import CLI_MODULES, subcommands
from docgen.sections import Section
from docgen.source import Source, assignments, source

FuncDef = ast.FunctionDef | ast.AsyncFunctionDef


def calls_of(tree: ast.Module, cls: str) -> Iterator[tuple[ast.Call, tuple[FuncDef, ...]]]:
    """Every ``cls(...)`` call in ``tree`` with the functions that enclose it, outermost first."""
    def visit(node: ast.AST, stack: tuple[FuncDef, ...]) -> Iterator[tuple[ast.Call, tuple[FuncDef, ...]]]:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            stack = (*stack, node)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == cls:
            yield node, stack
        for child in ast.iter_child_nodes(node):
            yield from visit(child, stack)
    yield from visit(tree, ())


def _position(node: ast.AST) -> tuple[int, int]:
    return getattr(node, "lineno", 0), getattr(node, "col_offset", 0)


def helper_inputs(src: Source, call: ast.Call) -> list[tuple[str, str]]:
    """The flags and env vars a module-level helper reads when ``call`` passes it ``args``."""
    if not (isinstance(call.func, ast.Name) and any(isinstance(a, ast.Name) and a.id == "args" for a in call.args)):
        return []
    found: list[tuple[str, str]] = []
    for helper in src.tree.body:
        if isinstance(helper, ast.FunctionDef) and helper.name == call.func.id:
            found += [i for stmt in helper.body for n in ast.walk(stmt) if isinstance(n, ast.expr)
                      for i in inputs_of(src, n, (), follow=False) if i[0] in ("flag", "env")]
    return found


def inputs_of(
    src: Source, expr: ast.expr, funcs: tuple[FuncDef, ...], *, follow: bool = True
) -> list[tuple[str, str]]:
    """What feeds ``expr``: ``("flag", dest)`` for ``args.dest``, ``("env", CONST)`` for an ``ENV_*`` constant,
    ``("param", name)`` for a parameter of an enclosing function, ``("self", attr)`` for ``self.attr``. Follows a
    bare local name (or one whose attribute is read) to its assignment, and module-level helpers that are passed
    ``args``."""
    params = {a.arg for f in funcs for a in (*f.args.posonlyargs, *f.args.args, *f.args.kwonlyargs)}
    params -= {"self", "args", "environ"}
    found: list[tuple[str, str]] = []
    for node in sorted(ast.walk(expr), key=_position):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id in ("args", "self"):
                found.append(("flag" if node.value.id == "args" else "self", node.attr))
        elif isinstance(node, ast.Name) and node.id.startswith("ENV_"):
            found.append(("env", node.id))
        elif isinstance(node, ast.Name) and node.id in params:
            found.append(("param", node.id))
        elif isinstance(node, ast.Call):
            found += helper_inputs(src, node)
    # A bare local name (``queues``), or one whose attribute is read (``health_port.port``), is followed.
    local = [expr] if isinstance(expr, ast.Name) else [
        n.value for n in ast.walk(expr) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
        and n.value.id not in ("args", "self")]
    for ref in local if follow and funcs else []:
        if ref.id in params:
            continue
        for node in ast.walk(funcs[-1]):
            for name, _, value in assignments([node] if isinstance(node, ast.stmt) else []):
                if name == ref.id and value is not None:
                    found += inputs_of(src, value, funcs, follow=False)
    return list(dict.fromkeys(found))


def flag_names(parser: argparse.ArgumentParser, command: str, dest: str) -> str:
    for action in subcommands(parser)[command]._actions:
        if action.dest == dest:
            return "/".join(f"`{s}`" for s in action.option_strings) if action.option_strings else f"`{dest}`"
    raise LookupError(f"taskfleet {command} has no flag for {dest}")


def setters_of(section: Section, parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    """field -> how a user sets it, read from the code that builds ``section.cls``."""
    result: dict[str, list[str]] = {}
    for setter in section.setters:
        if setter.kind == "field":  # the user builds the dataclass itself
            for f in dataclasses.fields(source(section.module).namespace[section.cls]):
                result[f.name] = [setter.template.format(f.name)]
            continue
        src = source(setter.module)
        command = CLI_MODULES.get(setter.module, "")
        for call, funcs in calls_of(src.tree, section.cls):
            for keyword in call.keywords:
                if keyword.arg is None:
                    continue
                inputs = inputs_of(src, keyword.value, funcs)
                shown = result.setdefault(keyword.arg, [])
                if setter.kind == "cli":
                    labels = [f"`{command}` {flag_names(parser, command, v)}" for k, v in inputs if k == "flag"]
                    labels += [f"`{src.namespace[v]}`" for k, v in inputs if k == "env"]
                else:
                    labels = [setter.template.format(v) for k, v in inputs if k == setter.kind][:1]
                shown += [label for label in labels if label not in shown]
    return result
