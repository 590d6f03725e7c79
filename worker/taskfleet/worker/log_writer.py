"""The one output of a process's log lines (``taskfleet.worker.logging``): each rendered line is written with a
single ``write`` call, so the lines of a supervisor and its forked children sharing one stderr never interleave."""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, TextIO

__all__ = ["WRITER", "LineWriter", "NamedWriter"]


class LineWriter:
    """The one output of the process: writes each rendered line with a single ``write`` call.

    Every logger (ours, structlog's when routed, the stdlib handler) writes through this object, so re-targeting it
    (``configure_logging`` with a new stream) takes effect for all of them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._text: TextIO = sys.stderr
        self._binary: Any = None  # the stream's byte buffer when lines can bypass its text layer

    def target(self, stream: TextIO) -> None:
        """Write to ``stream`` from now on (its byte buffer when it has a UTF-8 one)."""
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "").replace("_", "")
        buffer = getattr(stream, "buffer", None)
        self._text = stream
        self._binary = buffer if encoding == "utf8" and callable(getattr(buffer, "write", None)) else None

    def reset_lock_after_fork(self) -> None:
        """A lock held by another thread at fork time would never be released in the child."""
        self._lock = threading.Lock()

    def msg(self, line: str | bytes) -> None:
        """Write one rendered line: ``bytes`` (JSON) already end in a newline, ``str`` (console) get one."""
        with self._lock:
            if self._binary is not None:
                # Straight to the byte buffer and flushed: one write(2), which a text layer could split.
                self._binary.write(line if isinstance(line, bytes) else f"{line}\n".encode("utf-8", "replace"))
                self._binary.flush()
            else:
                self._text.write(line.decode("utf-8", "replace") if isinstance(line, bytes) else f"{line}\n")
                self._text.flush()

    debug = info = warning = warn = error = exception = critical = fatal = log = msg


WRITER = LineWriter()
os.register_at_fork(after_in_child=WRITER.reset_lock_after_fork)


class NamedWriter:
    """What a logger named by ``get_logger(name)`` writes to: the shared writer plus a name for the ``logger`` key."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def msg(self, line: str | bytes) -> None:
        """Write one rendered line through the shared writer."""
        WRITER.msg(line)

    debug = info = warning = warn = error = exception = critical = fatal = log = msg
