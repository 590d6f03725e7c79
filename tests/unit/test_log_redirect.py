"""Specification of a worker child's redirected stdout and stderr (taskfleet.worker.log_redirect): each line written
becomes one log event, of the task that wrote it."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

from taskfleet.worker import log_redirect
from taskfleet.worker.log_redirect import MAX_LINE_CHARS, Redirect, redirect_stdouts
from taskfleet.worker.logging import configure_logging


@pytest.fixture
def log() -> Iterator[io.StringIO]:
    """The process's log lines (JSON), in this stream for the test; logging put back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging(fmt="json", stream=stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


Redirected = Callable[[], Redirect]


@pytest.fixture
def redirected(log: io.StringIO) -> Iterator[Redirected]:
    """Redirects this process's stdout and stderr when called (in the test itself: pytest's own capture puts its
    streams back between a fixture's setup and the test); the real ones are put back after the test."""
    made: list[Redirect] = []

    def redirect() -> Redirect:
        before = sys.stdout, sys.stderr
        redirect = redirect_stdouts()
        assert redirect is not None
        assert (sys.stdout, sys.stderr) != before
        made.append(redirect)
        return redirect

    yield redirect
    for redirect in made:
        redirect.restore()


def _events(log: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.getvalue().splitlines()]


def _said(log: io.StringIO) -> list[tuple[str, str | None]]:
    """(event, task_id) of each redirected line."""
    return [(e["event"], e.get("task_id")) for e in _events(log) if e.get("logger") == "taskfleet.redirected"]


def test_a_print_in_a_task_is_one_info_event_with_the_task_id_and_name(
        redirected: Redirected, log: io.StringIO) -> None:
    redirect = redirected()
    redirect.begin_task("t-1", "billing.charge")

    print("charging", 3, "cards")

    [event] = _events(log)
    assert event["event"] == "charging 3 cards"
    assert event["level"] == "info"
    assert event["stream"] == "stdout"
    assert event["logger"] == "taskfleet.redirected"
    assert (event["task_id"], event["task"]) == ("t-1", "billing.charge")


def test_a_line_on_stderr_is_a_warning(redirected: Redirected, log: io.StringIO) -> None:
    redirect = redirected()
    redirect.begin_task("t-1", "billing.charge")

    print("card declined", file=sys.stderr)

    [event] = _events(log)
    assert (event["event"], event["level"], event["stream"]) == ("card declined", "warning", "stderr")


def test_each_line_of_a_multi_line_write_is_an_event_and_empty_lines_are_skipped(
        redirected: Redirected, log: io.StringIO) -> None:
    redirect = redirected()
    redirect.begin_task("t-1", "report")

    sys.stdout.write("first\n\nsecond\r\nthird\n")

    assert _said(log) == [("first", "t-1"), ("second", "t-1"), ("third", "t-1")]


def test_a_partial_line_waits_for_its_newline(redirected: Redirected, log: io.StringIO) -> None:
    redirect = redirected()
    redirect.begin_task("t-1", "progress")

    sys.stdout.write("working")
    sys.stdout.flush()
    assert _said(log) == []
    print("... done")

    assert _said(log) == [("working... done", "t-1")]


def test_a_partial_line_is_logged_when_its_task_ends_with_that_task_id(
        redirected: Redirected, log: io.StringIO) -> None:
    redirect = redirected()
    redirect.begin_task("t-1", "progress")
    sys.stdout.write("no newline")

    redirect.end_task()
    print("between tasks")

    assert _said(log) == [("no newline", "t-1"), ("between tasks", None)]


def test_a_partial_line_written_outside_a_task_is_logged_before_the_next_task_begins(
        redirected: Redirected, log: io.StringIO) -> None:
    redirect = redirected()
    sys.stdout.write("loading")

    redirect.begin_task("t-2", "work")
    print("in the task")

    assert _said(log) == [("loading", None), ("in the task", "t-2")]


def test_outside_a_task_a_line_has_no_task_id(redirected: Redirected, log: io.StringIO) -> None:
    redirected()
    print("child starting")

    [event] = _events(log)
    assert "task_id" not in event
    assert "task" not in event


def test_a_line_longer_than_the_limit_is_logged_in_pieces_and_nothing_is_lost(
        redirected: Redirected, log: io.StringIO) -> None:
    redirect = redirected()
    text = "x" * (2 * MAX_LINE_CHARS + 5)

    sys.stdout.write(text)  # no newline: the pieces that reach the limit go at once
    assert [len(e) for e, _ in _said(log)] == [MAX_LINE_CHARS, MAX_LINE_CHARS]
    redirect.end_task()

    assert "".join(e for e, _ in _said(log)) == text


def test_bytes_written_to_the_buffer_are_decoded_even_when_a_character_is_split(
        redirected: Redirected, log: io.StringIO) -> None:
    redirected()
    encoded = "café\n".encode()

    sys.stdout.buffer.write(encoded[:4])
    sys.stdout.buffer.write(encoded[4:])

    assert _said(log) == [("café", None)]


def test_the_streams_answer_like_a_non_terminal_stdout(redirected: Redirected) -> None:
    redirected()
    assert not sys.stdout.isatty()
    assert sys.stdout.encoding == "utf-8"
    assert sys.stdout.writable()


def test_restoring_logs_what_is_left_and_puts_the_real_streams_back(log: io.StringIO) -> None:
    real = sys.stdout, sys.stderr
    redirect = redirect_stdouts()
    assert redirect is not None
    redirect.begin_task("t-3", "export")
    sys.stderr.write("unfinished")

    redirect.restore()

    assert (sys.stdout, sys.stderr) == real
    assert [(e["event"], e["level"], e["task_id"]) for e in _events(log)] == [("unfinished", "warning", "t-3")]


def test_what_is_written_while_a_line_is_being_logged_goes_to_the_real_output(
        redirected: Redirected, log: io.StringIO, capfd: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    redirect = redirected()
    # Given a logger that itself writes to stderr (as a logging error handler may)
    class Noisy:
        def info(self, event: str, **fields: Any) -> None:
            sys.stderr.write(f"while logging {event}\n")

    monkeypatch.setattr(redirect, "_log", Noisy())

    print("hello")

    # Then that write is not redirected again (no loop): it reaches the real stderr
    assert "while logging hello" in capfd.readouterr().err


def test_nothing_is_redirected_before_logging_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log_redirect, "is_configured", lambda: False)
    real = sys.stdout

    assert redirect_stdouts() is None
    assert sys.stdout is real
