"""A worker child's ``sys.stdout`` and ``sys.stderr`` as log events: a ``print()`` in a task is a log line of that
task (JSON in JSON mode, with its ``task_id`` and ``task``), not a stray raw line between the JSON ones.

Celery's ``worker_redirect_stdouts`` does the same (``WorkerSettings.redirect_stdouts``, on by default). Each line is
one event of the logger ``taskfleet.redirected``, its text the ``event`` and a ``stream`` key (``stdout`` or
``stderr``); stdout lines are logged at ``info``, stderr lines at ``warning`` (Celery logs both at
``worker_redirect_stdouts_level``, ``WARNING`` by default). Lines written while a task runs (from any thread of the
child: it runs one task at a time) carry the task's ``task_id`` and ``task``; lines written outside one, e.g. by a
``worker_process_init`` receiver, carry neither.

A partial line waits for its newline, or for the end of the task (or of the child) that wrote it, whichever comes
first; a line longer than ``MAX_LINE_CHARS`` is logged in pieces of that size; an empty line is not logged.
``flush()`` does not end a line. A partial line still waiting when the child is killed (a hard time limit, a second
SIGTERM) is lost with it; every complete line is logged as it is written. What bypasses ``sys.stdout`` and
``sys.stderr`` (a subprocess, C code writing to file descriptors 1 and 2, or ``os.write``) reaches the real output as
it is. Our own log lines never pass through here: the log writer holds the real stderr.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import os
import sys
import threading
from typing import TYPE_CHECKING, TextIO

from taskfleet.worker.logging import Logger, get_logger, is_configured

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = ["MAX_LINE_CHARS", "REDIRECTED_LOGGER", "Redirect", "redirect_stdouts"]

#: The logger name of the events a redirected line becomes (Celery's is ``celery.redirected``).
REDIRECTED_LOGGER = "taskfleet.redirected"
#: A partial line is logged when it reaches this many characters, so output without newlines (a progress bar) never
#: grows without bound.
MAX_LINE_CHARS = 16384

#: The task a line belongs to: ``(task_id, task name)``, or None outside a task.
TaskContext = tuple[str, str] | None


class _Stream(io.RawIOBase):
    """The byte sink under one redirected text stream: decodes, cuts lines, logs them through its ``Redirect``."""

    def __init__(self, owner: Redirect, kind: str, fd: int | None) -> None:
        super().__init__()
        self.owner = owner
        self.kind = kind
        self._fd = fd
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.partial = ""
        self.partial_context: TaskContext = None

    @property
    def name(self) -> str:
        return f"<{self.kind}>"

    def writable(self) -> bool:
        return True

    def read(self, size: int = -1, /) -> bytes:
        raise io.UnsupportedOperation("read")

    def isatty(self) -> bool:
        return False  # what reads this (colours, progress bars) should write for a log, not a terminal

    def fileno(self) -> int:
        """The real stream's file descriptor (what is written to it directly is not redirected)."""
        if self._fd is None:
            raise io.UnsupportedOperation("fileno")
        return self._fd

    def write(self, data: ReadableBuffer) -> int:
        raw = bytes(data)
        self.owner.take(self, self._decoder.decode(raw), raw)
        return len(raw)

    def decode_rest(self) -> str:
        return self._decoder.decode(b"", final=True)


class Redirect:
    """This process's ``sys.stdout`` and ``sys.stderr`` replaced by streams that log what is written to them (module
    docstring). Made by ``redirect_stdouts``; ``restore`` puts the real streams back."""

    def __init__(self, stdout: TextIO, stderr: TextIO) -> None:
        self._real = (stdout, stderr)
        self._log: Logger = get_logger(REDIRECTED_LOGGER)
        self._lock = threading.Lock()
        self._emitting = threading.local()
        self._task: TaskContext = None
        self._streams = (_Stream(self, "stdout", _fileno(stdout)), _Stream(self, "stderr", _fileno(stderr)))
        self.stdout = _text(self._streams[0])
        self.stderr = _text(self._streams[1])

    def install(self) -> None:
        sys.stdout, sys.stderr = self.stdout, self.stderr

    def reset_lock_after_fork(self) -> None:
        """A lock held by another thread at fork time would never be released in the child."""
        self._lock = threading.Lock()

    def begin_task(self, task_id: str, task: str) -> None:
        """Lines written from now on belong to this task (a partial line written before it is logged first)."""
        with self._lock:
            self._end_partials()
            self._task = (task_id, task)

    def end_task(self) -> None:
        """The task has ended: its partial lines are logged, and lines written from now on belong to no task."""
        with self._lock:
            self._end_partials()
            self._task = None

    def restore(self) -> None:
        """Log what is left (partial lines) and put the real ``sys.stdout`` and ``sys.stderr`` back."""
        with self._lock:
            for stream in self._streams:
                stream.partial += stream.decode_rest()
            self._end_partials()
            self._task = None
        if sys.stdout is self.stdout:
            sys.stdout = self._real[0]
        if sys.stderr is self.stderr:
            sys.stderr = self._real[1]

    def take(self, stream: _Stream, text: str, raw: bytes) -> None:
        """What was written to ``stream``: log its complete lines, keep the rest."""
        if getattr(self._emitting, "active", False):
            # Written while this thread logs a line (a logging error handler printing to stderr, say): going round
            # again could loop forever, so it goes to the real output as it is.
            self._write_real(stream, raw)
            return
        if not text:
            return
        with self._lock:
            if stream.partial and stream.partial_context != self._task:
                self._emit(stream, stream.partial, stream.partial_context)
                stream.partial = ""
            *lines, rest = (stream.partial + text).split("\n")
            for line in lines:
                self._emit_long(stream, line, self._task)
            while len(rest) >= MAX_LINE_CHARS:
                self._emit(stream, rest[:MAX_LINE_CHARS], self._task)
                rest = rest[MAX_LINE_CHARS:]
            stream.partial, stream.partial_context = rest, self._task

    def _end_partials(self) -> None:
        for stream in self._streams:
            if stream.partial:
                self._emit(stream, stream.partial, stream.partial_context)
                stream.partial = ""

    def _emit_long(self, stream: _Stream, line: str, context: TaskContext) -> None:
        for start in range(0, len(line), MAX_LINE_CHARS):
            self._emit(stream, line[start:start + MAX_LINE_CHARS], context)

    def _emit(self, stream: _Stream, line: str, context: TaskContext) -> None:
        line = line.removesuffix("\r")  # a \r\n line end
        if not line:  # an empty line says nothing in a log
            return
        fields = {"stream": stream.kind}
        if context is not None:
            fields["task_id"], fields["task"] = context
        self._emitting.active = True
        try:
            if stream.kind == "stdout":
                self._log.info(line, **fields)
            else:
                self._log.warning(line, **fields)
        finally:
            self._emitting.active = False

    def _write_real(self, stream: _Stream, raw: bytes) -> None:
        with contextlib.suppress(OSError, io.UnsupportedOperation):
            os.write(stream.fileno(), raw)


def redirect_stdouts() -> Redirect | None:
    """Replace this process's ``sys.stdout`` and ``sys.stderr`` with streams that log each line (module docstring);
    None, and nothing replaced, when logging is not configured (there would be nowhere to log to)."""
    if not is_configured():
        return None
    redirect = Redirect(sys.stdout, sys.stderr)
    redirect.install()
    os.register_at_fork(after_in_child=redirect.reset_lock_after_fork)
    return redirect


def _fileno(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both OSError and ValueError
        return None


def _text(stream: _Stream) -> TextIO:
    """A text stream over ``stream`` that hands every write straight down (``write_through``): nothing waits in a
    buffer of its own, and ``.buffer`` takes bytes as a real ``sys.stdout`` does."""
    return io.TextIOWrapper(stream, encoding="utf-8", errors="backslashreplace", write_through=True)
