"""The broker commands' terminal: results on stdout, everything for a person (errors, questions, spinners) on
stderr, and decoration only where a person is looking.

This module and the command modules that use it are imported only when a broker command runs (see
``broker_commands``), so ``rich`` never loads in a worker.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.prompt import Confirm
from rich.syntax import Syntax

from taskfleet.errors import TaskfleetError
from taskfleet.urls import mask_secrets

#: Line width when output goes to a pipe or a log rather than a terminal (and COLUMNS is unset): wide enough that
#: tables are not wrapped at rich's 80-column default.
PIPE_WIDTH = 200


def _console(*, stderr: bool) -> Console:
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = PIPE_WIDTH
    return console


#: Results and tables: what a script reads (and pipes).
out = _console(stderr=False)
#: Errors, questions, spinners and tracebacks: what a person reads.
err = _console(stderr=True)

Handler = Callable[[argparse.Namespace, Mapping[str, str]], int]

EXIT_FAILED = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


class CommandFailed(Exception):
    """Ends a command with ``message`` on stderr and exit status ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def command(handler: Handler) -> Handler:
    """Turn the errors a command can expect (``CommandFailed``, any ``TaskfleetError``, Ctrl-C) into a message on
    stderr and an exit status, instead of a Python traceback."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
        try:
            return handler(args, environ)
        except CommandFailed as exc:
            return fail(str(exc), code=exc.code)
        except TaskfleetError as exc:
            return fail(str(exc))
        except KeyboardInterrupt:
            return fail("interrupted", code=EXIT_INTERRUPTED)

    return run


def fail(message: str, *, code: int = EXIT_FAILED) -> int:
    """Print ``taskfleet: message`` on stderr (any URL's password masked); returns ``code`` for the handler to
    return."""
    err.print(f"[bold red]taskfleet:[/] {escape(mask_secrets(message))}", soft_wrap=True)
    return code


def say(markup: str) -> None:
    """A line for a person on stdout (rich markup; escape any value in it)."""
    out.print(markup, soft_wrap=True)


def plain(text: str) -> None:
    """``text`` exactly as given on stdout (ids, JSON): no markup, wrapping or colour."""
    out.out(text, highlight=False)


def plural(count: int, noun: str) -> str:
    """``1 message``, ``2 messages``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def print_json(value: Any) -> None:
    """``value`` as one line of JSON on stdout (values JSON cannot hold are shown with ``repr``)."""
    plain(json.dumps(value, default=repr))


def require_terminal(refusal: str) -> None:
    """Raise ``CommandFailed`` (``refusal``, and why) when stdin is not a terminal: a command that must ask first
    refuses rather than hang on a question nobody sees. Call it before ``ask`` unless ``--yes`` was given."""
    if not sys.stdin.isatty():
        raise CommandFailed(f"{refusal}: stdin is not a terminal to ask on (pass --yes to go ahead without asking)")


def ask(question: str) -> bool:
    """The answer to a yes/no ``question`` (rich markup) asked on stderr; default No (also at end of input)."""
    try:
        return Confirm.ask(question, console=err, default=False)
    except EOFError:
        return False


@contextlib.contextmanager
def spinner(markup: str, *, enabled: bool = True) -> Iterator[None]:
    """Show a spinner, ``markup`` and the elapsed time on stderr while the block runs, when stderr is a terminal
    (and ``enabled``); gone afterwards."""
    if not (enabled and err.is_terminal):
        yield
        return
    text = markup.replace("{", "{{").replace("}", "}}")  # TextColumn formats its text with str.format
    columns = (SpinnerColumn(), TextColumn(text), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        progress.add_task("", total=None)
        yield


def print_remote_traceback(traceback: str) -> None:
    """A task's traceback (formatted where it ran) on stderr, highlighted when stderr is a terminal."""
    if err.is_terminal:
        code = Syntax(traceback.rstrip(), "pytb", word_wrap=True, background_color="default")
        err.print(Panel(code, title="remote traceback", title_align="left", border_style="red"))
    else:
        err.out(traceback.rstrip(), highlight=False)
