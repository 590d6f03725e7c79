"""Process-wide structured logging: JSON lines (or a console view on a TTY) with passwords masked.

Every line is rendered once and written with a single ``write`` call, so the lines of a supervisor and its
forked children sharing one stderr never interleave. Records from the stdlib ``logging`` module (redis-py,
urllib3...) go through the same processors and the same output.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from typing import Any, Literal, TextIO, cast

import orjson
import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from taskfleet.errors import ConfigurationError
from taskfleet.urls import mask_secrets

__all__ = ["LogFormat", "configure_logging", "get_logger"]

LogFormat = Literal["json", "console", "auto"]

DEFAULT_FORMAT: LogFormat = "auto"
DEFAULT_LEVEL = "info"

_LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
_FORMATS = frozenset({"json", "console", "auto"})
_JSON_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS
_HEAD_KEYS = ("timestamp", "level", "event")


class _LineWriter:
    """The one structlog "logger" of the process: writes each rendered line with a single ``write`` call.

    Cached bound loggers keep a reference to this object, so re-targeting it (``configure_logging`` with a
    new stream) takes effect for them too.
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


_WRITER = _LineWriter()
os.register_at_fork(after_in_child=_WRITER.reset_lock_after_fork)


class _NamedWriter:
    """What ``get_logger(name)`` wraps: the shared writer plus a name for the ``logger`` key."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def msg(self, line: str | bytes) -> None:
        """Write one rendered line through the shared writer."""
        _WRITER.msg(line)

    debug = info = warning = warn = error = exception = critical = fatal = log = msg


# Configured once and then mutated in place: cached loggers hold this very list.
_PROCESSORS: list[Processor] = []
_configured: tuple[str, int, TextIO] | None = None


def _mask(value: Any) -> Any:
    """``value`` with URL passwords masked in every string; unknown objects become (masked) strings."""
    if isinstance(value, str):
        return mask_secrets(value) if "://" in value and "@" in value else value
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {key: _mask(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_mask(item) for item in value]
    return _mask(str(value))


def _add_logger_name(logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Processor: the name given to ``get_logger``, as the ``logger`` key (an explicit one wins)."""
    name = getattr(logger, "name", None)
    if name is not None:
        event_dict.setdefault("logger", name)
    return event_dict


def _mask_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Processor: mask passwords in the event text and in every value before anything is rendered."""
    return {key: _mask(value) for key, value in event_dict.items()}


def _render_json(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> bytes:
    """Processor: one JSON object and a newline, timestamp/level/event first for humans reading raw lines."""
    ordered = {key: event_dict.pop(key) for key in _HEAD_KEYS if key in event_dict}
    ordered.update(event_dict)
    try:
        return orjson.dumps(ordered, default=str, option=_JSON_OPTIONS)
    except TypeError:  # e.g. an int wider than 64 bits: a log line must never fail the caller
        return (json.dumps(ordered, default=str) + "\n").encode("utf-8")


def _processors(fmt: str, colors: bool) -> list[Processor]:
    renderer: Processor = (
        _render_json if fmt == "json" else structlog.dev.ConsoleRenderer(colors=colors)
    )
    return [
        structlog.contextvars.merge_contextvars,
        _add_logger_name,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        # Render tracebacks to text here, in every format, so that the masking below covers them.
        structlog.processors.format_exc_info,
        _mask_secrets,
        renderer,
    ]


class _StdlibHandler(logging.Handler):
    """Routes stdlib ``logging`` records through the structlog processors and the shared writer."""

    def emit(self, record: logging.LogRecord) -> None:
        """Render ``record`` like a structlog event (``logger`` = the stdlib logger name) and write it."""
        try:
            event_dict: EventDict = {"event": record.getMessage(), "logger": record.name}
            if record.exc_info:
                event_dict["exc_info"] = record.exc_info
            result: Any = event_dict
            method = record.levelname.lower()
            for processor in _PROCESSORS:
                result = processor(_WRITER, method, result)
            _WRITER.msg(result)
        except structlog.DropEvent:
            return
        except Exception:  # noqa: BLE001 - the stdlib convention: report via handleError, never raise
            self.handleError(record)


_STDLIB_HANDLER = _StdlibHandler()


def _parse_level(level: str) -> int:
    try:
        return _LEVELS[level.strip().lower()]
    except (KeyError, AttributeError):
        raise ConfigurationError(
            f"unknown log level {level!r}; expected one of {', '.join(_LEVELS)}"
        ) from None


def _writer_factory(name: str | None = None, *_args: Any) -> _LineWriter | _NamedWriter:
    return _WRITER if name is None else _NamedWriter(name)


def _is_tty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _resolve_format(fmt: str, stream: TextIO) -> str:
    if fmt not in _FORMATS:
        raise ConfigurationError(f"unknown log format {fmt!r}; expected one of json, console, auto")
    if fmt != "auto":
        return fmt
    return "console" if _is_tty(stream) else "json"


def configure_logging(
    *, fmt: LogFormat = DEFAULT_FORMAT, level: str = DEFAULT_LEVEL, stream: TextIO | None = None
) -> None:
    """Configure structlog and stdlib ``logging`` for this process.

    Args:
        fmt: ``"json"`` (one object per line: ``timestamp`` ISO 8601 UTC, ``level``, ``event`` and the bound
            key-values), ``"console"`` (human-readable, coloured on a TTY) or ``"auto"`` (default: console
            when ``stream`` is a TTY, JSON otherwise).
        level: the minimum level, case-insensitive: ``debug``, ``info`` (default), ``warning``, ``error``,
            ``critical``. Applies to structlog and to the stdlib root logger alike.
        stream: where lines go; default ``sys.stderr`` as it is at call time.

    Raises:
        ConfigurationError: for an unknown ``fmt`` or ``level``.

    Idempotent and cheap: calling it again with the same arguments (e.g. in a forked child) does nothing.
    A new stream or format applies to every logger at once; the level of a logger is fixed the first time it
    logs (structlog's filtering loggers are cached for speed), so configure before logging.
    """
    global _configured
    level_no = _parse_level(level)
    target = stream if stream is not None else sys.stderr
    resolved = _resolve_format(fmt, target)
    root = logging.getLogger()
    wanted = (resolved, level_no, target)
    if (
        _configured is not None
        and _configured[0] == resolved
        and _configured[1] == level_no
        and _configured[2] is target
        and _STDLIB_HANDLER in root.handlers
    ):
        return
    _WRITER.target(target)
    _PROCESSORS[:] = _processors(resolved, colors=resolved == "console" and _is_tty(target))
    structlog.configure(
        processors=_PROCESSORS,
        wrapper_class=structlog.make_filtering_bound_logger(level_no),
        context_class=dict,
        logger_factory=_writer_factory,
        cache_logger_on_first_use=True,
    )
    _STDLIB_HANDLER.setLevel(level_no)
    if _STDLIB_HANDLER not in root.handlers:
        root.addHandler(_STDLIB_HANDLER)
    root.setLevel(level_no)
    _configured = wanted


def configure_cli_logging(command: str, *, fmt: LogFormat, level: str) -> bool:
    """``configure_logging`` for ``taskfleet <command>``: on a bad format or level, print why (no logger exists yet)
    and return False; the entrypoint then exits with ``ExitCode.BAD_CONFIG``."""
    try:
        configure_logging(fmt=fmt, level=level)
    except ConfigurationError as exc:
        print(f"taskfleet {command}: {exc}")
        return False
    return True


def get_logger(name: str | None = None) -> FilteringBoundLogger:
    """A structlog logger; ``name`` (e.g. ``__name__``), when given, is bound as the ``logger`` key."""
    # The name travels as a logger-factory argument: binding it here would build the logger eagerly, with
    # whatever configuration exists at import time.
    if name is None:
        return cast(FilteringBoundLogger, structlog.get_logger())
    return cast(FilteringBoundLogger, structlog.get_logger(name))
