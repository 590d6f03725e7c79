"""docs/cli.md: ``taskfleet.cli.build_parser()``, every subcommand and flag, then the exit codes.

Usage lines are wrapped at a fixed width (no terminal dependent wrapping); a flag default that depends on the machine
(``os.cpu_count()``) is shown as its source expression, read from the ``add_argument`` call.
"""

from __future__ import annotations

import argparse
import ast
import functools
from collections.abc import Collection, Sequence

from docgen.markdown import REGENERATE, cell, document, generated_notice, row, rst_to_md
from docgen.source import Source, assignments, class_def, comment_of, render_default, source

#: Width the CLI usage lines are wrapped at, whatever the terminal (COLUMNS) says.
USAGE_WIDTH = 100
#: Which ``taskfleet`` subcommand each CLI module's handler serves (for flags found in that module).
CLI_MODULES = {"taskfleet.worker.worker_command": "worker", "taskfleet.worker.beat_command": "beat",
               "taskfleet.operator.operator_command": "operator"}


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


def value_text(action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    if action.choices is not None:
        return "`" + "|".join(str(c) for c in action.choices) + "`"
    metavar = action.metavar if isinstance(action.metavar, str) else None
    return f"`{metavar or action.dest.upper()}`" if action.option_strings else ""


def default_text(action: argparse.Action) -> str:
    if action.required or (not action.option_strings and action.nargs not in ("?", "*")):
        return "required"
    if action.nargs == 0:
        return "off"
    if action.default is None:
        return "—"
    if action.default == []:
        return "`[]`"
    src_node = default_nodes().get(tuple(action.option_strings))
    return (render_default(src_node[0], src_node[1], action.default, shell=True) if src_node
            else f"`{action.default}`")


def option_row(action: argparse.Action, groups: Sequence[argparse._MutuallyExclusiveGroup]) -> str:
    positional = action.metavar if isinstance(action.metavar, str) else action.dest
    names = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{positional}`"
    description = rst_to_md(action.help or "")
    if isinstance(action, argparse._AppendAction):
        description = f"{description} (repeatable)" if "repeatable" not in description else description
    for group in groups:
        if action in group._group_actions:
            others = [a.option_strings[-1] for a in group._group_actions if a is not action]
            description += " (not with " + ", ".join(f"`{o}`" for o in others) + ")"
    return row((names, value_text(action), default_text(action), description.strip()))


def option_table(parser: argparse.ArgumentParser, skip: Collection[tuple[str, ...]] = ()) -> list[str]:
    """The table of ``parser``'s options and positionals, except those whose option strings are in ``skip``."""
    lines = ["| option | value | default | description |", "|---|---|---|---|"]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or (action.option_strings
                                                         and tuple(action.option_strings) in skip):
            continue
        lines.append(option_row(action, parser._mutually_exclusive_groups))
    return lines


def command_section(name: str, parser: argparse.ArgumentParser, summary: str) -> list[str]:
    lines = [f"## taskfleet {name}", "", summary[:1].upper() + summary[1:] + ".", ""]
    if parser.description:
        lines += [rst_to_md(parser.description), ""]
    lines += ["```", usage(parser), "```", ""]
    leaves = subcommands(parser)
    if not leaves:
        return [*lines, *option_table(parser), ""]
    return [*lines, *nested_sections(name, parser, leaves)]


def nested_sections(name: str, parser: argparse.ArgumentParser,
                    leaves: dict[str, argparse.ArgumentParser]) -> list[str]:
    """A command with commands of its own (``taskfleet control rate-limit``): the options every one of them takes,
    once, then a section per command (its other spellings named) with its usage and its own arguments."""
    spellings: dict[int, list[str]] = {}
    for spelling, leaf in leaves.items():
        spellings.setdefault(id(leaf), []).append(spelling)
    distinct = {id(leaf): leaf for leaf in leaves.values()}
    option_sets = [{tuple(a.option_strings) for a in leaf._actions if a.option_strings} for leaf in distinct.values()]
    shared = set.intersection(*option_sets) - {("-h", "--help")}
    first = next(iter(distinct.values()))
    lines = [f"Options of every `{name}` command:", "", "| option | value | default | description |",
             "|---|---|---|---|"]
    lines += [option_row(a, first._mutually_exclusive_groups) for a in first._actions
              if a.option_strings and tuple(a.option_strings) in shared]
    lines.append("")
    for key, leaf in distinct.items():
        own, *others = spellings[key]
        lines += [f"### taskfleet {name} {own}", ""]
        if others:
            lines += ["Also spelled " + ", ".join(f"`{o}`" for o in others) + ".", ""]
        if leaf.description:
            lines += [rst_to_md(leaf.description), ""]
        lines += ["```", usage(leaf), "```", ""]
        table = option_table(leaf, skip=shared)
        lines += [*table, ""] if len(table) > 2 else []
    return lines


def exit_codes() -> list[str]:
    src = source("taskfleet.worker.exitcodes")
    codes = src.namespace["ExitCode"]
    lines = ["## Exit codes", "",
             "`taskfleet worker`, `beat` and `operator` exit with these codes (`taskfleet.worker.exitcodes."
             "ExitCode`); `call`, `queues` and `purge` exit 0 or 1; a bad command line exits 2 everywhere.", "",
             "| code | name | meaning |", "|---|---|---|"]
    for name, stmt, _ in assignments(class_def(src, "ExitCode").body):
        lines.append(row((str(int(codes[name])), f"`{name}`", comment_of(src, stmt))))
    return [*lines, ""]


def render_cli(parser: argparse.ArgumentParser) -> str:
    """docs/cli.md."""
    helps = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
    commands = subcommands(parser)
    lines = ["# CLI reference", "", generated_notice(), "",
             f"Generated from `taskfleet.cli.build_parser()`; regenerate with `{REGENERATE}`. The `taskfleet` "
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
    return document(lines)
