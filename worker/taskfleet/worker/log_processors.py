"""The structlog-style processors of ``taskfleet.worker.logging``: what every event goes through before it is
written (the bound context, logger name, level and timestamp added, tracebacks rendered, passwords masked) and the
JSON renderer. Nothing here imports structlog (see ``taskfleet.worker.log_structlog``)."""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, cast

import orjson

from taskfleet.urls import mask_secrets

__all__ = ["EventDict", "Processor", "chain", "render_json"]

#: What a processor gets and (but for the renderer, which returns the line) returns.
EventDict = MutableMapping[str, Any]
#: A structlog-style processor: ``(logger, method name, event dict) -> event dict``; the last one renders.
Processor = Callable[[Any, str, EventDict], Any]
_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]

_METHOD_LEVELS: dict[str, str] = {"warn": "warning", "exception": "error"}  # method name -> ``level`` key
_JSON_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS
_HEAD_KEYS = ("timestamp", "level", "event")


def chain(renderer: Processor) -> list[Processor]:
    """Every processor of a configured process, in order, ending with ``renderer``."""
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


def _mask_secrets(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """Processor: mask passwords in the event text and in every value before anything is rendered."""
    return {key: _mask(value) for key, value in event_dict.items()}


def render_json(_logger: Any, _method: str, event_dict: EventDict) -> bytes:
    """Processor: one JSON object and a newline, timestamp/level/event first for humans reading raw lines."""
    ordered = {key: event_dict.pop(key) for key in _HEAD_KEYS if key in event_dict}
    ordered.update(event_dict)
    try:
        return orjson.dumps(ordered, default=str, option=_JSON_OPTIONS)
    except TypeError:  # e.g. an int wider than 64 bits: a log line must never fail the caller
        return (json.dumps(ordered, default=str) + "\n").encode("utf-8")
