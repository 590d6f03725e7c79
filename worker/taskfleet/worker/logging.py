"""Process-wide structured logging: JSON lines (or a console view on a TTY) with passwords masked.

Every line is rendered once and written with a single ``write`` call, so the lines of a supervisor and its
forked children sharing one stderr never interleave. Records from the stdlib ``logging`` module (redis-py,
urllib3...) go through the same processors and the same output.

The loggers speak structlog's API (``log.info("event", key=value)``, ``bind``, ``exception``) and run
structlog-style processors, but the JSON format never imports structlog: ``import structlog`` imports rich (a
dependency, for the CLI) and asyncio, some 5-10 MiB in every worker process, supervisor and children alike. Only the
console format imports it, for its ``ConsoleRenderer``. When the process uses structlog anyway (the app's tasks may),
structlog's own loggers are routed to the same processors and output (``route_structlog``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable, Mapping, MutableMapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, TextIO, cast

import orjson

from taskfleet.errors import ConfigurationError
from taskfleet.urls import mask_secrets

__all__ = ["LogFormat", "Logger", "configure_cli_logging", "configure_logging", "get_logger", "route_structlog"]

LogFormat = Literal["json", "console", "auto"]

DEFAULT_FORMAT: LogFormat = "auto"
DEFAULT_LEVEL = "info"

_LEVELS: dict[str, int] = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
                           "error": logging.ERROR, "critical": logging.CRITICAL}
_METHOD_LEVELS: dict[str, str] = {"warn": "warning", "exception": "error"}  # method name -> ``level`` key
_FORMATS = frozenset({"json", "console", "auto"})
_JSON_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS
_HEAD_KEYS = ("timestamp", "level", "event")

#: What a processor gets and (but for the renderer, which returns the line) returns.
EventDict = MutableMapping[str, Any]
#: A structlog-style processor: ``(logger, method name, event dict) -> event dict``; the last one renders.
Processor = Callable[[Any, str, EventDict], Any]
_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


class _LineWriter:
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


_WRITER = _LineWriter()
os.register_at_fork(after_in_child=_WRITER.reset_lock_after_fork)


class _NamedWriter:
    """What a logger named by ``get_logger(name)`` writes to: the shared writer plus a name for the ``logger`` key."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def msg(self, line: str | bytes) -> None:
        """Write one rendered line through the shared writer."""
        _WRITER.msg(line)

    debug = info = warning = warn = error = exception = critical = fatal = log = msg


# Configured once and then mutated in place: structlog's cached loggers (when routed) hold this very list.
_PROCESSORS: list[Processor] = []
_min_level = logging.NOTSET
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


def _merge_structlog_context(logger: Any, method: str, event_dict: EventDict) -> EventDict:
    """Processor: the context the app bound with ``structlog.contextvars.bind_contextvars``, if it uses structlog
    (without structlog imported, there is none to merge)."""
    contextvars_module = sys.modules.get("structlog.contextvars")
    if contextvars_module is None:
        return event_dict
    return cast(EventDict, contextvars_module.merge_contextvars(logger, method, event_dict))


def _add_logger_name(logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """Processor: the name given to ``get_logger``, as the ``logger`` key (an explicit one wins)."""
    name = getattr(logger, "name", None)
    if name is not None:
        event_dict.setdefault("logger", name)
    return event_dict


def _add_level(_logger: Any, method: str, event_dict: EventDict) -> EventDict:
    """Processor: the ``level`` key, the method's name (``exception`` logs at ``error``, ``warn`` is ``warning``)."""
    event_dict["level"] = _METHOD_LEVELS.get(method, method)
    return event_dict


def _add_timestamp(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """Processor: the ``timestamp`` key, ISO 8601 in UTC with a ``Z`` (``2024-05-01T12:00:00.123456Z``)."""
    event_dict["timestamp"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return event_dict


def _exc_info(value: Any) -> _ExcInfo | None:
    """``exc_info=`` as a tuple: an exception, an ``exc_info`` tuple, or true for the exception being handled."""
    if isinstance(value, BaseException):
        return type(value), value, value.__traceback__
    if isinstance(value, tuple) and len(value) == 3:
        kind, exc, tb = value
        if (isinstance(kind, type) and issubclass(kind, BaseException) and isinstance(exc, BaseException)
                and (tb is None or isinstance(tb, TracebackType))):
            return cast(_ExcInfo, value)
    if value:
        kind, exc, tb = sys.exc_info()
        return None if kind is None or exc is None else (kind, exc, tb)
    return None


def _format_exc_info(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """Processor: ``exc_info`` becomes ``exception``, the traceback as Python prints it (without the last newline)."""
    exc_info = _exc_info(event_dict.pop("exc_info", None))
    if exc_info is not None:
        event_dict["exception"] = "".join(traceback.format_exception(*exc_info)).removesuffix("\n")
    return event_dict


def _mask_secrets(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """Processor: mask passwords in the event text and in every value before anything is rendered."""
    return {key: _mask(value) for key, value in event_dict.items()}


def _render_json(_logger: Any, _method: str, event_dict: EventDict) -> bytes:
    """Processor: one JSON object and a newline, timestamp/level/event first for humans reading raw lines."""
    ordered = {key: event_dict.pop(key) for key in _HEAD_KEYS if key in event_dict}
    ordered.update(event_dict)
    try:
        return orjson.dumps(ordered, default=str, option=_JSON_OPTIONS)
    except TypeError:  # e.g. an int wider than 64 bits: a log line must never fail the caller
        return (json.dumps(ordered, default=str) + "\n").encode("utf-8")


def _processors(fmt: str, colors: bool) -> list[Processor]:
    renderer: Processor
    if fmt == "json":
        renderer = _render_json
    else:
        from structlog.dev import ConsoleRenderer  # deferred: importing structlog imports rich (module docstring)

        renderer = ConsoleRenderer(colors=colors)
    return [
        _merge_structlog_context,
        _add_logger_name,
        _add_level,
        _add_timestamp,
        # Render tracebacks to text here, in every format, so that the masking below covers them.
        _format_exc_info,
        _mask_secrets,
        renderer,
    ]


class Logger:
    """What ``get_logger`` returns: structlog's bound-logger API, without the async methods.

    ``log.info("event", key=value)`` writes one line with the bound context and ``key``; positional arguments are
    %-interpolated into the event; ``exc_info=`` (an exception, or true for the one being handled) adds its
    traceback as ``exception``. Calls below the configured level return at once.
    """

    __slots__ = ("_context", "_writer")

    def __init__(self, writer: _LineWriter | _NamedWriter, context: Mapping[str, Any] | None = None) -> None:
        self._writer = writer
        self._context = dict(context or {})

    def bind(self, **values: Any) -> Logger:
        """A logger whose lines also carry ``values``; this one is left as it is."""
        return Logger(self._writer, {**self._context, **values})

    def debug(self, event: str, *args: Any, **kw: Any) -> None:
        """Log ``event`` at debug level."""
        self._log(logging.DEBUG, "debug", event, args, kw)

    def info(self, event: str, *args: Any, **kw: Any) -> None:
        """Log ``event`` at info level."""
        self._log(logging.INFO, "info", event, args, kw)

    def warning(self, event: str, *args: Any, **kw: Any) -> None:
        """Log ``event`` at warning level."""
        self._log(logging.WARNING, "warning", event, args, kw)

    def error(self, event: str, *args: Any, **kw: Any) -> None:
        """Log ``event`` at error level."""
        self._log(logging.ERROR, "error", event, args, kw)

    def critical(self, event: str, *args: Any, **kw: Any) -> None:
        """Log ``event`` at critical level."""
        self._log(logging.CRITICAL, "critical", event, args, kw)

    def exception(self, event: str, *args: Any, **kw: Any) -> None:
        """Log ``event`` at error level with the traceback of the exception being handled."""
        kw.setdefault("exc_info", True)
        self._log(logging.ERROR, "error", event, args, kw)

    def _log(self, level: int, method: str, event: str, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
        if level < _min_level:
            return
        if args:  # as structlog does: one non-empty mapping fills %(name)s, anything else %s
            event = event % (args[0] if len(args) == 1 and isinstance(args[0], Mapping) and args[0] else args)
        if _configured is None:
            _log_unconfigured(getattr(self._writer, "name", None), self._context, method, event, kw)
            return
        result: Any = {**self._context, **kw, "event": event}
        for processor in _PROCESSORS:
            result = processor(self._writer, method, result)
        _WRITER.msg(result)


def _log_unconfigured(name: str | None, context: EventDict, method: str, event: str, kw: EventDict) -> None:
    """A line logged before ``configure_logging`` goes where structlog sends it (by default a console line on
    stdout), as it did when these loggers were structlog's own."""
    import structlog

    logger = structlog.get_logger() if name is None else structlog.get_logger(name)
    getattr(logger.bind(**context), method)(event, **kw)


class _StdlibHandler(logging.Handler):
    """Routes stdlib ``logging`` records through the same processors and the shared writer."""

    def emit(self, record: logging.LogRecord) -> None:
        """Render ``record`` like one of our events (``logger`` = the stdlib logger name) and write it."""
        try:
            event_dict: EventDict = {"event": record.getMessage(), "logger": record.name}
            if record.exc_info:
                event_dict["exc_info"] = record.exc_info
            result: Any = event_dict
            method = record.levelname.lower()
            for processor in _PROCESSORS:
                result = processor(_WRITER, method, result)
            _WRITER.msg(result)
        except Exception:  # noqa: BLE001 - the stdlib convention: report via handleError, never raise
            self.handleError(record)


_STDLIB_HANDLER = _StdlibHandler()


def _parse_level(level: str) -> int:
    try:
        return _LEVELS[level.strip().lower()]
    except (KeyError, AttributeError):
        raise ConfigurationError(f"unknown log level {level!r}; expected one of {', '.join(_LEVELS)}") from None


def _writer_factory(name: str | None = None, *_args: Any) -> _LineWriter | _NamedWriter:
    """structlog's logger factory when routed: ``structlog.get_logger(name)`` writes as ``get_logger(name)`` does."""
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
    """Configure this module's loggers, stdlib ``logging`` and (when imported) structlog for this process.

    Args:
        fmt: ``"json"`` (one object per line: ``timestamp`` ISO 8601 UTC, ``level``, ``event`` and the bound
            key-values), ``"console"`` (human-readable, coloured on a TTY) or ``"auto"`` (default: console
            when ``stream`` is a TTY, JSON otherwise).
        level: the minimum level, case-insensitive: ``debug``, ``info`` (default), ``warning``, ``error``,
            ``critical``. Applies to our loggers, structlog's and the stdlib root logger alike.
        stream: where lines go; default ``sys.stderr`` as it is at call time.

    Raises:
        ConfigurationError: for an unknown ``fmt`` or ``level``.

    Idempotent and cheap: calling it again with the same arguments (e.g. in a forked child) does nothing.
    A new stream, format or level applies to every logger of this module at once; structlog's own loggers (see
    ``route_structlog``) keep the level they had when they first logged, so configure before logging.
    """
    global _configured, _min_level
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
    _min_level = level_no
    _STDLIB_HANDLER.setLevel(level_no)
    if _STDLIB_HANDLER not in root.handlers:
        root.addHandler(_STDLIB_HANDLER)
    root.setLevel(level_no)
    _configured = wanted
    route_structlog()


def route_structlog() -> None:
    """If this process has imported structlog, make ``structlog.get_logger()`` loggers (in the app's tasks, say)
    write through the same processors, at the same level, to the same output as ours.

    ``configure_logging`` calls it, and the worker and beat call it again once the app is imported (which is when
    structlog usually arrives). A no-op before ``configure_logging`` and in processes without structlog: importing
    it here would load rich (see the module docstring).
    """
    if _configured is None or "structlog" not in sys.modules:
        return
    import structlog

    structlog.configure(
        processors=_PROCESSORS,
        wrapper_class=structlog.make_filtering_bound_logger(_min_level),
        context_class=dict,
        logger_factory=_writer_factory,
        cache_logger_on_first_use=True,
    )


def configure_cli_logging(command: str, *, fmt: LogFormat, level: str) -> bool:
    """``configure_logging`` for ``taskfleet <command>``: on a bad format or level, print why (no logger exists yet)
    and return False; the entrypoint then exits with ``ExitCode.BAD_CONFIG``."""
    try:
        configure_logging(fmt=fmt, level=level)
    except ConfigurationError as exc:
        print(f"taskfleet {command}: {exc}")
        return False
    return True


def get_logger(name: str | None = None) -> Logger:
    """A logger; ``name`` (e.g. ``__name__``), when given, is the ``logger`` key of its lines.

    Cheap, and safe at import time: the configuration is read when a line is logged, not here."""
    return Logger(_WRITER if name is None else _NamedWriter(name))
