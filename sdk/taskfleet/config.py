"""``App.config_from_object``: settings read from a module, a class, a mapping or an object named by a string.

Keys are ``<NAMESPACE>_<NAME>`` in upper case, the names of our environment variables: ``TASKFLEET_BROKER_URL``,
``TASKFLEET_RESULT_BACKEND``, ``TASKFLEET_BROKER_MANAGEMENT_URL``, and ``TASKFLEET_<KEYWORD>`` for every other ``App``
keyword argument (``TASKFLEET_DEFAULT_QUEUE``, ``TASKFLEET_VISIBILITY_TIMEOUT_S``, ``TASKFLEET_INCLUDE``,
``TASKFLEET_BEAT_SCHEDULE``, ...). Keys outside the namespace are ignored (a Django ``settings.py`` holds many), so
Celery's ``CELERY_*`` settings can stay beside ours while a project moves over. Under the namespace, every key must be
one of ours: an unknown one is a ``ConfigurationError`` that names it, and one that is Celery's name for a setting
(``TASKFLEET_TASK_SERIALIZER``) says what ours is (``taskfleet.celery_settings``). All problems are reported at once.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Collection, Mapping
from datetime import timedelta
from typing import Any

from taskfleet.errors import ConfigurationError
from taskfleet.settings import PublishRetry

__all__ = ["DEFAULT_NAMESPACE", "config_keys", "config_names", "key_for", "read_config", "resolve_source"]

DEFAULT_NAMESPACE = "TASKFLEET"
#: ``App`` keywords whose key is not simply their name in upper case (they match our environment variables).
_KEY_NAMES = {"broker": "BROKER_URL"}
_NAMESPACE = re.compile(r"[A-Z][A-Z0-9_]*")


def key_for(keyword: str, namespace: str | None = DEFAULT_NAMESPACE) -> str:
    """The configuration key of the ``App`` keyword ``keyword``: ``broker`` -> ``TASKFLEET_BROKER_URL``."""
    name = _KEY_NAMES.get(keyword, keyword.upper())
    return f"{namespace}_{name}" if namespace else name


def config_keys(keywords: Collection[str], namespace: str | None = DEFAULT_NAMESPACE) -> dict[str, str]:
    """Every key under ``namespace`` -> the ``App`` keyword it sets."""
    return {key_for(keyword, namespace): keyword for keyword in keywords}


def resolve_source(source: object) -> object:
    """``source`` itself, or the object a string names: ``"proj.settings"`` (a module), ``"proj.settings:Config"``
    or ``"django.conf:settings"`` (an attribute of a module), or ``"proj.settings.Config"`` (tried as a module
    first, then as an attribute of its parent)."""
    if not isinstance(source, str):
        return source
    module_name, colon, attribute = source.partition(":")
    if not colon:
        try:
            return importlib.import_module(source)
        except ModuleNotFoundError as exc:
            parent, dot, attribute = source.rpartition(".")
            if not dot or exc.name != source:
                raise ConfigurationError(f"config_from_object({source!r}): cannot import it: {exc}") from exc
            module_name = parent
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"config_from_object({source!r}): cannot import {module_name!r}: {exc}") from exc
    try:
        return getattr(module, attribute)
    except AttributeError as exc:
        raise ConfigurationError(f"config_from_object({source!r}): {module_name!r} has no {attribute!r}") from exc


def read_config(source: object, *, namespace: str | None, keywords: Collection[str]) -> dict[str, Any]:
    """The ``App`` keyword arguments that ``source`` (resolved) sets under ``namespace``, their values converted
    (a ``timedelta`` for a ``*_s`` setting becomes seconds, a mapping for ``publish_retry`` a ``PublishRetry``).
    Raises one ``ConfigurationError`` listing every key under the namespace that is not a setting."""
    if namespace is not None and not _NAMESPACE.fullmatch(namespace):
        raise ConfigurationError(f"namespace must be upper case letters, digits and '_', got {namespace!r}")
    resolved = resolve_source(source)
    prefix = f"{namespace}_" if namespace else ""
    known = config_keys(keywords, namespace)
    found: dict[str, Any] = {}
    problems: list[str] = []
    for key in config_names(resolved):
        if not key.startswith(prefix) or (not prefix and not key.isupper()):
            continue
        keyword = known.get(key)
        if keyword is None:
            problems.append(_unknown(key, prefix, known))
            continue
        try:
            found[keyword] = _convert(keyword, _value(resolved, key))
        except (TypeError, ValueError) as exc:
            problems.append(f"{key}: {exc}")
    if problems:
        raise ConfigurationError("bad configuration: " + "; ".join(problems))
    return found


def config_names(source: object) -> list[str]:
    """The settings-like names of a resolved source: a mapping's keys, else its upper-case attributes. Values are
    not read here: reading some settings outside our namespace can raise (Django's ``SECRET_KEY`` when empty)."""
    if isinstance(source, Mapping):
        return [str(k) for k in source]
    return [name for name in dir(source) if name.isupper() and not name.startswith("_")]


def _value(source: object, name: str) -> Any:
    return source[name] if isinstance(source, Mapping) else getattr(source, name)


def _unknown(key: str, prefix: str, known: Mapping[str, str]) -> str:
    import difflib  # deferred with Celery's table: only a configuration naming unknown settings needs them

    from taskfleet.celery_settings import explain_celery_name

    name = key[len(prefix):]
    celery = explain_celery_name(name.lower())
    if celery is not None:
        return f"{key} is Celery's {name.lower()!r}: {celery}"
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{key} is not a Taskfleet setting{hint}"


def _convert(keyword: str, value: Any) -> Any:
    converter = _CONVERTERS.get(keyword)
    if converter is not None:
        return converter(value)
    if keyword.endswith("_s") and isinstance(value, timedelta):
        return value.total_seconds()
    return value


def _publish_retry(value: Any) -> PublishRetry:
    if isinstance(value, PublishRetry):
        return value
    if isinstance(value, Mapping):
        return PublishRetry(**value)
    raise TypeError(f"expected a PublishRetry or a mapping of its fields, got {type(value).__name__}")


def _modules(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    modules = tuple(value)
    if not all(isinstance(m, str) for m in modules):
        raise TypeError("expected module names")
    return modules


def _flag(value: Any) -> bool:
    """A switch: a bool, or the text an environment variable holds (``1``/``true``/``yes``/``on``, ``0``/``false``/
    ``no``/``off``/empty, any case), so ``config_from_object(os.environ)`` reads ``"false"`` as off."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise TypeError(f"expected true or false, got {value!r}")


def _count(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError(f"expected a whole number, got {value!r}")
    return int(value)


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})

_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "publish_retry": _publish_retry, "include": _modules, "worker_send_task_events": _flag,
    "task_send_sent_event": _flag, "events_max_len": _count,
}
