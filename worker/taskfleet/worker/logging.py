"""Process-wide structured logging: JSON lines (or a console view on a TTY) with passwords masked.

Every line is rendered once and written with a single ``write`` call, so the lines of a supervisor and its
forked children sharing one stderr never interleave. Records from the stdlib ``logging`` module (redis-py,
urllib3...) go through the same processors and the same output.

The loggers speak structlog's API (``log.info("event", key=value)``, ``bind``, ``exception``) and run
structlog-style processors, but the JSON format never imports structlog: ``import structlog`` imports rich (a
dependency, for the CLI) and asyncio, some 5-10 MiB in every worker process, supervisor and children alike. Only the
console format imports it, for its ``ConsoleRenderer``. When the process uses structlog anyway (the app's tasks may),
structlog's own loggers are routed to the same processors and output (``route_structlog``).

Its parts: ``log_writer`` (the one output), ``log_processors`` (what an event goes through, the JSON renderer and
password masking) and ``log_structlog`` (everything that imports structlog); this module holds the loggers and the
process's configuration.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any, Literal, TextIO

from taskfleet.errors import ConfigurationError
from taskfleet.worker import log_structlog
from taskfleet.worker.log_processors import EventDict, Processor, chain, render_json
from taskfleet.worker.log_writer import WRITER, LineWriter, NamedWriter

__all__ = ["LogFormat", "Logger", "configure_cli_logging", "configure_logging", "get_logger", "is_configured",
           "route_structlog"]

LogFormat = Literal["json", "console", "auto"]

DEFAULT_FORMAT: LogFormat = "auto"
DEFAULT_LEVEL = "info"

_LEVELS: dict[str, int] = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
                           "error": logging.ERROR, "critical": logging.CRITICAL}
_FORMATS = frozenset({"json", "console", "auto"})

# Configured once and then mutated in place: structlog's cached loggers (when routed) hold this very list.
_PROCESSORS: list[Processor] = []
_min_level = logging.NOTSET
_configured: tuple[str, int, TextIO] | None = None


def _processors(fmt: str, colors: bool) -> list[Processor]:
    # The console renderer is structlog's: importing it imports rich (module docstring).
    return chain(render_json if fmt == "json" else log_structlog.console_renderer(colors=colors))


class Logger:
    """What ``get_logger`` returns: structlog's bound-logger API, without the async methods.

    ``log.info("event", key=value)`` writes one line with the bound context and ``key``; positional arguments are
    %-interpolated into the event; ``exc_info=`` (an exception, or true for the one being handled) adds its
    traceback as ``exception``. Calls below the configured level return at once.
    """

    __slots__ = ("_context", "_writer")

    def __init__(self, writer: LineWriter | NamedWriter, context: Mapping[str, Any] | None = None) -> None:
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
            log_structlog.log_unconfigured(getattr(self._writer, "name", None), self._context, method, event, kw)
            return
        result: Any = {**self._context, **kw, "event": event}
        for processor in _PROCESSORS:
            result = processor(self._writer, method, result)
        WRITER.msg(result)


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
                result = processor(WRITER, method, result)
            WRITER.msg(result)
        except Exception:  # noqa: BLE001 - the stdlib convention: report via handleError, never raise
            self.handleError(record)


_STDLIB_HANDLER = _StdlibHandler()


def _parse_level(level: str) -> int:
    try:
        return _LEVELS[level.strip().lower()]
    except (KeyError, AttributeError):
        raise ConfigurationError(f"unknown log level {level!r}; expected one of {', '.join(_LEVELS)}") from None


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
    WRITER.target(target)
    _PROCESSORS[:] = _processors(resolved, colors=resolved == "console" and _is_tty(target))
    _min_level = level_no
    _STDLIB_HANDLER.setLevel(level_no)
    if _STDLIB_HANDLER not in root.handlers:
        root.addHandler(_STDLIB_HANDLER)
    root.setLevel(level_no)
    _configured = wanted
    route_structlog()


def is_configured() -> bool:
    """Whether ``configure_logging`` has run in this process (or in the process it was forked from)."""
    return _configured is not None


def route_structlog() -> None:
    """If this process has imported structlog, make ``structlog.get_logger()`` loggers (in the app's tasks, say)
    write through the same processors, at the same level, to the same output as ours.

    ``configure_logging`` calls it, and the worker and beat call it again once the app is imported (which is when
    structlog usually arrives). A no-op before ``configure_logging`` and in processes without structlog: importing
    it here would load rich (see the module docstring).
    """
    if _configured is None or "structlog" not in sys.modules:
        return
    log_structlog.route(_PROCESSORS, _min_level)


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
    return Logger(WRITER if name is None else NamedWriter(name))
