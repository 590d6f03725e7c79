"""Serializers for message envelopes and results: JSON by default, msgpack optional, pickle only by opt-in."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from taskfleet.errors import ConfigurationError, EncodeError

JSON = "json"
MSGPACK = "msgpack"
PICKLE = "pickle"


@dataclass(frozen=True)
class Serializer:
    """A named codec; ``content_type`` is written in front of every message it encodes."""

    name: str
    content_type: str
    dumps: Callable[[Any], bytes]
    loads: Callable[[bytes], Any]


def _json_dumps(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)
    except TypeError as exc:
        raise EncodeError(f"cannot serialize to JSON: {exc}") from exc


def _msgpack_dumps(obj: Any) -> bytes:
    import msgpack

    try:
        data: bytes = msgpack.packb(obj, use_bin_type=True)
    except (TypeError, ValueError) as exc:
        raise EncodeError(f"cannot serialize to msgpack: {exc}") from exc
    return data


def _msgpack_loads(data: bytes) -> Any:
    import msgpack

    return msgpack.unpackb(data, raw=False)


def _pickle_dumps(obj: Any) -> bytes:
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise EncodeError(f"cannot pickle: {exc}") from exc


SERIALIZERS: dict[str, Serializer] = {
    JSON: Serializer(JSON, "application/json", _json_dumps, orjson.loads),
    MSGPACK: Serializer(MSGPACK, "application/x-msgpack", _msgpack_dumps, _msgpack_loads),
    PICKLE: Serializer(PICKLE, "application/x-python-pickle", _pickle_dumps, pickle.loads),
}
BY_CONTENT_TYPE: dict[str, Serializer] = {s.content_type: s for s in SERIALIZERS.values()}


def get_serializer(name: str) -> Serializer:
    """The serializer called ``name``; an unknown name is a ``ConfigurationError``."""
    try:
        return SERIALIZERS[name]
    except KeyError:
        raise ConfigurationError(f"unknown serializer {name!r}; choose one of {sorted(SERIALIZERS)}") from None


def validate_accept(serializer: str, accept: frozenset[str], *, allow_pickle: bool) -> None:
    """Refuse configurations that would read or write pickle without the explicit opt-in."""
    for name in {serializer, *accept}:
        get_serializer(name)
    if (serializer == PICKLE or PICKLE in accept) and not allow_pickle:
        raise ConfigurationError("pickle can run arbitrary code on the worker; opt in with App(allow_pickle=True)")
    if serializer not in accept:
        raise ConfigurationError(f"serializer {serializer!r} is not in accept_content {sorted(accept)}")
