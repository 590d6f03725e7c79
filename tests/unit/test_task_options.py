"""Specification of how ``@app.task`` options are defined (taskfleet.task): ``TaskOptions`` is the one definition,
``TaskOptionsKwargs`` spells the same names and types for type checkers, and both are enforced at call sites."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from taskfleet import App, TaskOptions
from taskfleet.canvas.builtins import NAMES as BUILTIN_TASKS
from taskfleet.task import OPTION_NAMES, TaskOptionsKwargs

REPO = Path(__file__).resolve().parents[2]


def test_the_decorators_keyword_options_are_the_fields_of_task_options_with_their_types() -> None:
    fields = typing.get_type_hints(TaskOptions)
    fields.pop("name")  # a keyword of its own in @app.task: None means "<app name>.<function name>"

    assert typing.get_type_hints(TaskOptionsKwargs) == fields
    assert TaskOptionsKwargs.__required_keys__ == frozenset()
    assert tuple(fields) == OPTION_NAMES


def test_every_option_reaches_the_tasks_options() -> None:
    app = App("t")
    values = {"queue": "q", "priority": 3, "max_retries": None, "autoretry_for": (ValueError,),
              "retry_backoff": 2.0, "retry_backoff_max": 60.0, "retry_jitter": False, "default_retry_delay": 5.0,
              "time_limit": 10.0, "soft_time_limit": 5.0, "expires": 60.0, "rate_limit": "10/m", "ignore_result": True,
              "track_started": True, "bind": True}
    assert set(values) == set(OPTION_NAMES)

    task = app.task(name="t.all", **values)(lambda self: None)  # type: ignore[call-overload]

    assert dataclasses.asdict(task.options) == {"name": "t.all", **values}


def test_base_is_a_keyword_of_its_own_not_an_option() -> None:
    # The class a task is an instance of, not a setting of its runs: it is not in TaskOptions (nor in the options
    # the decorator checks), and the error for an unknown option lists it with name.
    assert "base" not in OPTION_NAMES
    with pytest.raises(TypeError, match=r"the options are name, base, queue"):
        App("t").task(retries=3)  # type: ignore[call-overload]


def test_an_unknown_option_is_a_type_error_naming_it_before_any_function_is_registered() -> None:
    app = App("t")

    with pytest.raises(TypeError, match=r"unknown option\(s\) 'retries'.*max_retries"):
        app.task(retries=3)  # type: ignore[call-overload]
    assert set(app.tasks) == set(BUILTIN_TASKS)  # only the builtins every app has


def test_a_list_of_exception_types_is_taken_as_a_tuple() -> None:
    task = App("t").task(autoretry_for=[ValueError])(lambda: None)  # type: ignore[call-overload]

    assert task.options.autoretry_for == (ValueError,)


_CALL_SITES = """
from taskfleet import App, Task

app = App("t")

class Hooked(Task[None]): ...

@app.task(queue="q", max_retries=None, autoretry_for=(ValueError,), retry_backoff=2.0, time_limit=5, expires=60)
def fine() -> None: ...

@app.task
def bare() -> None: ...

@app.task(name=None, bind=True)
def bound(self: object) -> None: ...

@app.task(priority="high")
def wrong_type() -> None: ...

@app.task(retries=3)
def unknown_name() -> None: ...

app.task(expires="1h")

@app.task(base=Hooked, queue="q")
def hooked() -> None: ...

@app.task(base=int)
def wrong_base() -> None: ...
"""


def test_mypy_checks_option_names_and_types_at_call_sites(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    snippet = tmp_path / "call_sites.py"
    snippet.write_text(_CALL_SITES)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--python-version", "3.11", "--no-error-summary", "--follow-imports",
         "silent", "--cache-dir", str(tmp_path / "cache"), "--config-file", os.devnull, str(snippet)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "MYPYPATH": str(REPO / "sdk")},
    )

    source = _CALL_SITES.splitlines()
    errors = [line.removeprefix(f"{snippet}:") for line in result.stdout.splitlines() if ": error: " in line]
    flagged = {source[int(line.split(":")[0]) - 1] for line in errors}
    assert flagged == {'@app.task(priority="high")', "@app.task(retries=3)", 'app.task(expires="1h")',
                       "@app.task(base=int)"}, (
        result.stdout + result.stderr)
