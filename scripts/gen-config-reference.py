"""Generate docs/configuration.md and docs/cli.md from the code, so the reference never drifts from it.

- Settings: every field of the settings dataclasses (``dataclasses.fields``), with its type and default, and the
  description written beside it in the source: the ``#:`` lines above the field or the ``#`` comment on its line,
  else the ``#:`` comment of the ``DEFAULT_*`` constant it defaults to. "Set with" is read from the code that
  builds each dataclass (``App.__init__``, the CLI handlers): which ``App`` keyword, flag or env var feeds a field.
- Environment variables: the module-level ``ENV_*`` constants, and what reads them.
- CLI: ``taskfleet.cli.build_parser()``, every subcommand and flag, formatted here at a fixed width (no terminal
  dependent wrapping); flag defaults that depend on the machine are shown as their source expression.

Run ``.venv/bin/python -P scripts/gen-config-reference.py`` (``--check`` exits 1 when a file is stale);
``tests/unit/test_config_reference.py`` fails when the committed files differ from what this writes.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import importlib
import inspect
import io
import sys
import tokenize
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONFIG_DOC = "docs/configuration.md"
CLI_DOC = "docs/cli.md"
REGENERATE = ".venv/bin/python -P scripts/gen-config-reference.py"
#: Width the CLI usage lines are wrapped at, whatever the terminal (COLUMNS) says.
USAGE_WIDTH = 100
#: Packages scanned for ``ENV_*`` constants.
PACKAGES = ("taskfleet", "taskfleet.brokers", "taskfleet.backends", "taskfleet.worker", "taskfleet.operator",
            "taskfleet.cli")
#: Which ``taskfleet`` subcommand each CLI module's handler serves (for flags found in that module).
CLI_MODULES = {"taskfleet.worker.cli": "worker", "taskfleet.worker.beat_cli": "beat",
               "taskfleet.operator.cli": "operator"}


@dataclass(frozen=True)
class Setter:
    """Where a dataclass is built, and how its inputs are shown: ``kind`` is ``param`` (a keyword of the enclosing
    function, shown with ``template``), ``field`` (the user builds the dataclass: its own keywords), ``cli``
    (``args.X`` flags and ``ENV_*`` variables) or ``self`` (another settings object's field, shown with
    ``template``)."""

    module: str
    kind: str
    template: str = "{}"


@dataclass(frozen=True)
class Section:
    title: str
    module: str
    cls: str
    intro: str
    setters: tuple[Setter, ...] = ()


SECTIONS = (
    Section(
        "App settings (`AppSettings`)", "taskfleet.settings", "AppSettings",
        "Everything an `App` is configured with: keyword arguments of `App(name, ...)`, or of `app.configure(...)`"
        " before use (which also takes `broker=` and `result_backend=`; an unknown name raises `TypeError`). "
        "`App(accept_content=)` defaults to `{serializer}`.",
        (Setter("taskfleet.app", "param", "`App({}=)`"),),
    ),
    Section(
        "Publish retries (`PublishRetry`)", "taskfleet.settings", "PublishRetry",
        "How a publisher retries when the broker connection fails: exponential backoff (`backoff_s` doubled per "
        "attempt, capped at `backoff_max_s`), then `BrokerConnectionError`. "
        "Pass `App(publish_retry=PublishRetry(...))`.",
        (Setter("", "field", "`PublishRetry({}=)`"),),
    ),
    Section(
        "Task options (`TaskOptions`)", "taskfleet.task", "TaskOptions",
        "Per-task settings from `@app.task(...)` (and `@app.periodic(...)`, which takes `name`, `queue` and "
        "`priority`). Times are in seconds; an unknown option raises `TypeError`.",
        (Setter("taskfleet.app", "param", "`@app.task({}=)`"),),
    ),
    Section(
        "Worker settings (`WorkerSettings`)", "taskfleet.worker.settings", "WorkerSettings",
        "How one `taskfleet worker` process tree runs; built from its flags (see [cli.md](cli.md#taskfleet-worker)).",
        (Setter("taskfleet.worker.cli", "cli"),),
    ),
    Section(
        "Beat settings (`BeatSettings`)", "taskfleet.worker.beat", "BeatSettings",
        "How one beat replica (`taskfleet beat`, or `taskfleet worker --beat`) runs. Only the lease has a flag; "
        "the other fields are fixed at their defaults.",
        (Setter("taskfleet.worker.beat_cli", "cli"), Setter("taskfleet.worker.cli", "cli")),
    ),
    Section(
        "Operator settings (`OperatorSettings`)", "taskfleet.operator.runner", "OperatorSettings",
        "How `taskfleet operator` runs; built from its flags (see [cli.md](cli.md#taskfleet-operator)).",
        (Setter("taskfleet.operator.cli", "cli"),),
    ),
    Section(
        "Broker settings (`BrokerSettings`)", "taskfleet.settings", "BrokerSettings",
        "What a broker implementation receives. Not set directly: `AppSettings.broker_settings()` builds it from "
        "the app's settings.",
        (Setter("taskfleet.settings", "self", "`AppSettings.{}`"),),
    ),
    Section(
        "Result backend settings (`BackendSettings`)", "taskfleet.settings", "BackendSettings",
        "What a result backend receives. Not set directly: `AppSettings.backend_settings()` builds it from the "
        "app's settings (none when `result_backend_url` is unset).",
        (Setter("taskfleet.settings", "self", "`AppSettings.{}`"),),
    ),
)


# -- reading the source --------------------------------------------------------------------------------------------

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


def rst_to_md(text: str) -> str:
    return " ".join(text.replace("``", "`").split())


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
    if node is not None and refers_to_a_module(src, node):
        return f"`{ast.unparse(node)}`"
    if shell and isinstance(value, str):
        return f"`{value}`"
    return f"`{value!r}`"


# -- who sets a field ----------------------------------------------------------------------------------------------

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
    bare local name to its assignment, and module-level helpers that are passed ``args``."""
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
    if follow and isinstance(expr, ast.Name) and expr.id not in params and funcs:
        for node in ast.walk(funcs[-1]):
            for name, _, value in assignments([node] if isinstance(node, ast.stmt) else []):
                if name == expr.id and value is not None:
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


# -- configuration.md ----------------------------------------------------------------------------------------------

def cell(text: str) -> str:
    return text.replace("|", "\\|")


def type_text(src: Source, annotation: str) -> str:
    """The annotation as written, with a module-level alias (``LogFormat``) spelled out."""
    for name, _, value in assignments(src.tree.body):
        if name == annotation and value is not None:
            return ast.unparse(value)
    return annotation


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
        if f.default_factory is not dataclasses.MISSING:
            default = f"`{getattr(f.default_factory, '__name__', 'factory')}()`"
        elif f.default is dataclasses.MISSING:
            default = "required"
        else:
            default = render_default(src, value_node, f.default)
        description = comment_of(src, stmt)
        if not description and isinstance(value_node, ast.Name):
            description = constant_comment(src, value_node.id)
        if not description:
            missing.append(f"{section.cls}.{f.name}")
        row = [f"`{f.name}`", f"`{type_text(src, str(f.type))}`", default,
               ", ".join(setters.get(f.name, [])) or "—", description]
        lines.append("| " + " | ".join(cell(c) for c in row) + " |")
    return [*lines, ""], missing


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
    return sorted(found, key=lambda row: row[2])


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
        row = [f"`{value}`", f"`{module}.{constant}`", ", ".join(sets) or "—", ", ".join(readers_of(constant))]
        lines.append("| " + " | ".join(cell(c) for c in row) + " |")
    lines += ["", "Without `--health-port` or `TASKFLEET_HEALTH_PORT`, the worker and beat serve health checks on "
              "port 8000 when they run in a container (`KUBERNETES_SERVICE_HOST` is set or `/.dockerenv` exists) "
              "and not at all elsewhere. On Kubernetes the operator sets `TASKFLEET_BROKER_URL` (and "
              "`TASKFLEET_BROKER_MANAGEMENT_URL` when the TaskQueue names one) in the worker pods from "
              "`spec.broker`; the TaskQueue schema rejects `TASKFLEET_BROKER*` names in `spec.worker.env`.", ""]
    return lines


def render_configuration(parser: argparse.ArgumentParser) -> tuple[str, list[str]]:
    """docs/configuration.md, and the fields that have no description in the source."""
    lines = ["# Configuration reference", "",
             f"<!-- Generated by scripts/gen-config-reference.py: do not edit. Regenerate with `{REGENERATE}`. -->",
             "",
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
    return "\n".join(lines).rstrip("\n") + "\n", missing


def anchor(title: str) -> str:
    """GitHub's anchor for a heading."""
    kept = "".join(ch for ch in title.lower() if ch.isalnum() or ch in " -_")
    return kept.replace(" ", "-")


# -- cli.md --------------------------------------------------------------------------------------------------------

def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def usage(parser: argparse.ArgumentParser) -> str:
    formatter = argparse.HelpFormatter(parser.prog, width=USAGE_WIDTH)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


@functools.cache
def default_nodes() -> dict[tuple[str, ...], tuple[Source, ast.expr]]:
    """Option strings -> (module, the ``default=`` expression) of every ``add_argument`` call in the CLI modules."""
    found: dict[tuple[str, ...], tuple[Source, ast.expr]] = {}
    for module in ("taskfleet.cli", "taskfleet.cli.broker_commands", *CLI_MODULES):
        src = source(module)
        for node in ast.walk(src.tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "add_argument"):
                names = tuple(a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str))
                for keyword in node.keywords:
                    if keyword.arg == "default":
                        found.setdefault(names, (src, keyword.value))
    return found


def option_row(action: argparse.Action, groups: Sequence[argparse._MutuallyExclusiveGroup]) -> str:
    names = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{action.dest}`"
    if action.nargs == 0:
        value = ""
    elif action.choices is not None:
        value = "`" + "|".join(str(c) for c in action.choices) + "`"
    else:
        metavar = action.metavar if isinstance(action.metavar, str) else None
        value = f"`{metavar or action.dest.upper()}`" if action.option_strings else ""
    if action.required or not action.option_strings:
        default = "required"
    elif action.nargs == 0:
        default = "off"
    elif action.default is None:
        default = "—"
    else:
        src_node = default_nodes().get(tuple(action.option_strings))
        default = (render_default(src_node[0], src_node[1], action.default, shell=True) if src_node
                   else f"`{action.default}`")
        default = "`[]`" if action.default == [] else default
    description = rst_to_md(action.help or "")
    if isinstance(action, argparse._AppendAction):
        description = f"{description} (repeatable)" if "repeatable" not in description else description
    for group in groups:
        if action in group._group_actions:
            others = [a.option_strings[-1] for a in group._group_actions if a is not action]
            description += " (not with " + ", ".join(f"`{o}`" for o in others) + ")"
    return "| " + " | ".join(cell(c) for c in (names, value, default, description.strip())) + " |"


def command_section(name: str, parser: argparse.ArgumentParser, summary: str) -> list[str]:
    lines = [f"## taskfleet {name}", "", summary[:1].upper() + summary[1:] + ".", ""]
    if parser.description:
        lines += [rst_to_md(parser.description), ""]
    lines += ["```", usage(parser), "```", "", "| option | value | default | description |", "|---|---|---|---|"]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        lines.append(option_row(action, parser._mutually_exclusive_groups))
    return [*lines, ""]


def exit_codes() -> list[str]:
    src = source("taskfleet.worker.exitcodes")
    codes = src.namespace["ExitCode"]
    lines = ["## Exit codes", "",
             "`taskfleet worker`, `beat` and `operator` exit with these codes (`taskfleet.worker.exitcodes."
             "ExitCode`); `call`, `queues` and `purge` exit 0 or 1; a bad command line exits 2 everywhere.", "",
             "| code | name | meaning |", "|---|---|---|"]
    for name, stmt, _ in assignments(class_def(src, "ExitCode").body):
        lines.append("| " + " | ".join(cell(c) for c in (str(int(codes[name])), f"`{name}`",
                                                            comment_of(src, stmt))) + " |")
    return [*lines, ""]


def render_cli(parser: argparse.ArgumentParser) -> str:
    helps = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
    commands = subcommands(parser)
    lines = ["# CLI reference", "",
             f"<!-- Generated by scripts/gen-config-reference.py: do not edit. Regenerate with `{REGENERATE}`. -->",
             "", f"Generated from `taskfleet.cli.build_parser()`; regenerate with `{REGENERATE}`. The `taskfleet` "
             "command is installed with the package (or run `python -m taskfleet`). `taskfleet --version` prints "
             "the version. Environment variables and the settings behind the flags: "
             "[configuration.md](configuration.md).", "",
             "```", usage(parser), "```", "",
             "| command | what |", "|---|---|"]
    lines += [f"| [`{name}`](#taskfleet-{name}) | {cell(helps.get(name, ''))} |" for name in commands]
    lines.append("")
    for name, sub in commands.items():
        lines += command_section(name, sub, helps.get(name, ""))
    lines += exit_codes()
    return "\n".join(lines).rstrip("\n") + "\n"


# -- entry point ---------------------------------------------------------------------------------------------------

def render_all() -> tuple[dict[str, str], list[str]]:
    """{path relative to the repository: content}, and the settings fields without a description."""
    from taskfleet.cli import build_parser

    parser = build_parser()
    configuration, missing = render_configuration(parser)
    return {CONFIG_DOC: configuration, CLI_DOC: render_cli(parser)}, missing


def main(argv: Sequence[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description="Regenerate docs/configuration.md and docs/cli.md.")
    cli.add_argument("--check", action="store_true", help="write nothing; exit 1 when a file is stale")
    args = cli.parse_args(argv)
    outputs, missing = render_all()
    stale = [path for path, text in outputs.items()
             if not (REPO / path).exists() or (REPO / path).read_text(encoding="utf-8") != text]
    if args.check:
        for path in stale:
            print(f"{path} is stale: run {REGENERATE}", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        (REPO / path).write_text(outputs[path], encoding="utf-8")
        print(f"wrote {path}")
    if missing:
        print("fields without a description: " + ", ".join(missing), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
