"""docs/architecture.md is the map of the code: every file, folder, module and function it names exists.

It names things three ways, each checked here: a repository path in backticks (``sdk/taskfleet/app.py``, a folder, or
a glob), a dotted module in backticks (``taskfleet.brokers.redis``), and, in the table of one message's path, a row
``| hop | `file` | `function` | ... |`` whose function (``name`` or ``Class.method``) is defined in that file.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "architecture.md"
TEXT = DOC.read_text(encoding="utf-8")

_CODE = re.compile(r"`([^`\s]+)`")
_PATH = re.compile(r"^[\w.*-]+(/[\w.*-]+)+/?$")
_MODULE = re.compile(r"^taskfleet(\.\w+)+$")
_HOP = re.compile(r"^\|\s*\d+\s*\|\s*`([^`]+)`\s*\|\s*`([^`]+)`\s*\|", re.MULTILINE)


def _paths() -> list[str]:
    return sorted({c for c in _CODE.findall(TEXT) if _PATH.match(c) and not c.startswith(("http", "../"))})


def _modules() -> list[str]:
    return sorted({c for c in _CODE.findall(TEXT) if _MODULE.match(c)})


def _defined(tree: ast.Module) -> set[str]:
    """Every function and class in a module by qualified name (``f``, ``C``, ``C.m``)."""
    names: set[str] = set()

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(prefix + child.name)
                visit(child, f"{prefix}{child.name}.")

    visit(tree, "")
    return names


def test_the_map_names_files_modules_and_a_message_path() -> None:
    assert len(_paths()) >= 10
    assert len(_modules()) >= 5
    assert len(_HOP.findall(TEXT)) >= 8


@pytest.mark.parametrize("path", _paths())
def test_every_path_it_names_exists(path: str) -> None:
    if "*" in path:
        assert list(REPO.glob(path)), f"docs/architecture.md names {path}, which matches nothing"
    else:
        assert (REPO / path).exists(), f"docs/architecture.md names {path}, which does not exist"


@pytest.mark.parametrize("module", _modules())
def test_every_module_it_names_exists(module: str) -> None:
    parent, _, attr = module.rpartition(".")
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:  # its parent is a module, not a package
        spec = None
    if spec is None:  # then an attribute of a module (a class or function)
        loaded = importlib.import_module(parent)
        assert hasattr(loaded, attr), f"docs/architecture.md names {module}, which does not exist"


@pytest.mark.parametrize(("path", "function"), _HOP.findall(TEXT))
def test_every_hop_of_the_message_path_names_a_function_of_its_file(path: str, function: str) -> None:
    source = REPO / path
    assert source.is_file(), f"hop file {path} does not exist"
    assert function.removesuffix("()") in _defined(ast.parse(source.read_text(encoding="utf-8"))), (
        f"{function} is not defined in {path}"
    )
