"""The task message: a frozen envelope that owns its encoding. Brokers only ever see the bytes.

Wire format (version 1, see docs/protocol.md)::

    <content-type>[;compression=<codec>] LF <envelope serialized with that content type, then compressed>

e.g. ``application/json\\n{"v":1,"id":"...","task":"billing.send",...}``, or ``application/json;compression=gzip\\n``
and the gzip of that. The framing line comes first so a worker can refuse a serializer it does not accept (pickle)
*before* deserializing anything, and knows how to inflate the body (within ``max_decompressed_bytes``) before it
reads it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from taskfleet.compression import CODECS, compress, decompress
from taskfleet.errors import ContentTypeRefused, DecodeError, EncodeError
from taskfleet.serializers import BY_CONTENT_TYPE, Serializer
from taskfleet.settings import DEFAULT_MAX_DECOMPRESSED_BYTES

PROTOCOL_VERSION = 1
MIN_PRIORITY = 0
MAX_PRIORITY = 9
_MAX_CONTENT_TYPE_LEN = 64
#: The one parameter a framing line may carry after its content type.
_COMPRESSION_PARAM = ";compression="


@dataclass(frozen=True, kw_only=True, slots=True)
class Message:
    """One task invocation. Times are Unix timestamps in seconds (float); ``priority`` 0-9, higher runs first."""

    id: str
    task: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    queue: str = "default"
    priority: int = 0
    eta: float | None = None
    expires: float | None = None
    retries: int = 0
    root_id: str | None = None
    parent_id: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    #: What happens after this task finishes (callbacks, errbacks, the rest of a chain, the chord join it reports
    #: to), as plain data: read by ``taskfleet.canvas.workflow.Workflow``; None for a plain task (not on the wire).
    workflow: Mapping[str, Any] | None = None
    #: How the message is (or is to be) encoded, not part of the envelope: the serializer's name (None: the app's)
    #: and the compression codec (None: none), as ``decode`` read them from the framing line, so a retry of it is
    #: encoded as it was sent. Not compared.
    serializer: str | None = field(default=None, compare=False)
    compression: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not (MIN_PRIORITY <= self.priority <= MAX_PRIORITY):
            raise ValueError(f"priority must be {MIN_PRIORITY}-{MAX_PRIORITY}, got {self.priority}")
        if self.retries < 0:
            raise ValueError("retries must be >= 0")

    @property
    def broker_id(self) -> str:
        """The id the broker stores this message under: stable per (task id, attempt), so a re-published
        retry overwrites instead of duplicating."""
        return self.id if self.retries == 0 else f"{self.id}:{self.retries}"

    def is_expired(self, now: float | None = None) -> bool:
        """True when ``expires`` has passed."""
        return self.expires is not None and (time.time() if now is None else now) >= self.expires

    def delay_s(self, now: float | None = None) -> float:
        """Seconds until ``eta`` (0 when due or unset)."""
        if self.eta is None:
            return 0.0
        return max(0.0, self.eta - (time.time() if now is None else now))

    def replace(self, **changes: Any) -> Message:
        """A copy with ``changes`` applied (the message itself is immutable)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "v": PROTOCOL_VERSION,
            "id": self.id,
            "task": self.task,
            "args": list(self.args),
            "kwargs": dict(self.kwargs),
            "queue": self.queue,
            "priority": self.priority,
            "eta": self.eta,
            "expires": self.expires,
            "retries": self.retries,
            "root_id": self.root_id,
            "parent_id": self.parent_id,
            "headers": dict(self.headers),
            "created_at": self.created_at,
        }
        if self.workflow:
            out["workflow"] = self.workflow
        return out

    def encode(self, serializer: Serializer, compression: str | None = None) -> bytes:
        """The message's wire bytes, the envelope serialized with ``serializer`` and then compressed with the codec
        ``compression`` (``taskfleet.compression.CODECS``; None: not compressed). ``EncodeError`` when an argument
        cannot be serialized."""
        body = self.encode_body(serializer)
        return self.frame(serializer, compression, compress(compression, body) if compression else body)

    def encode_body(self, serializer: Serializer) -> bytes:
        """The envelope serialized with ``serializer``, before any compression; ``EncodeError`` when an argument
        cannot be serialized."""
        try:
            return serializer.dumps(self.to_dict())
        except Exception as exc:
            raise EncodeError(f"cannot encode arguments of {self.task}: {exc}") from exc

    @staticmethod
    def frame(serializer: Serializer, compression: str | None, body: bytes) -> bytes:
        """The wire bytes of an encoded (and, with ``compression``, compressed) ``body``: its framing line, LF,
        the body."""
        head = serializer.content_type if compression is None else f"{serializer.content_type}" \
            f"{_COMPRESSION_PARAM}{compression}"
        return head.encode("ascii") + b"\n" + body

    @classmethod
    def decode(cls, data: bytes, *, accept: frozenset[str],
               max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES) -> Message:
        """Parse wire bytes. ``accept`` lists serializer names; anything else raises ``ContentTypeRefused``,
        malformed input raises ``DecodeError`` with a readable reason. A compressed body is inflated first, at most
        to ``max_decompressed_bytes``: past it, ``DecompressionBomb`` (a ``DecodeError``)."""
        head, sep, body = data.partition(b"\n")
        if not sep or len(head) > _MAX_CONTENT_TYPE_LEN:
            raise DecodeError("malformed message: no content-type line")
        content_type, has_codec, codec = head.decode("ascii", "replace").partition(_COMPRESSION_PARAM)
        serializer = BY_CONTENT_TYPE.get(content_type)
        if serializer is None:
            raise DecodeError(f"malformed message: unknown content type {content_type!r}")
        if has_codec and codec not in CODECS:
            raise DecodeError(f"malformed message: unknown compression {codec!r} (known: {', '.join(CODECS)})")
        if serializer.name not in accept:
            raise ContentTypeRefused(f"content type {content_type!r} is not accepted (accept: {sorted(accept)})")
        if has_codec:
            body = decompress(codec, body, max_bytes=max_decompressed_bytes)
        try:
            raw = serializer.loads(body)
        except Exception as exc:
            raise DecodeError(f"malformed message: cannot deserialize {content_type}: {exc}") from exc
        return cls.from_dict(raw, serializer=serializer.name, compression=codec or None)

    @classmethod
    def from_dict(cls, raw: Any, *, serializer: str | None = None, compression: str | None = None) -> Message:
        """The message an envelope (``to_dict``) describes; ``serializer``/``compression``: how it was encoded."""
        if not isinstance(raw, dict):
            raise DecodeError("malformed message: envelope is not a mapping")
        version = raw.get("v")
        if version != PROTOCOL_VERSION:
            raise DecodeError(f"unsupported protocol version {version!r} (this worker reads {PROTOCOL_VERSION})")
        try:
            msg = cls(
                id=_str(raw, "id"),
                task=_str(raw, "task"),
                args=tuple(_typed(raw, "args", list, [])),
                kwargs=_typed(raw, "kwargs", dict, {}),
                queue=_str(raw, "queue"),
                priority=_typed(raw, "priority", int, 0),
                eta=_opt_float(raw, "eta"),
                expires=_opt_float(raw, "expires"),
                retries=_typed(raw, "retries", int, 0),
                root_id=raw.get("root_id"),
                parent_id=raw.get("parent_id"),
                headers=_typed(raw, "headers", dict, {}),
                created_at=float(raw.get("created_at") or 0.0),
                workflow=_typed(raw, "workflow", dict, None),
                serializer=serializer,
                compression=compression,
            )
        except (TypeError, ValueError) as exc:
            raise DecodeError(f"malformed message: {exc}") from exc
        return msg


def _str(raw: dict[str, Any], key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise DecodeError(f"malformed message: field {key!r} must be a non-empty string")
    return value


def _typed(raw: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = raw.get(key, default)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DecodeError(f"malformed message: field {key!r} must be {kind.__name__}")
    return value


def _opt_float(raw: dict[str, Any], key: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodeError(f"malformed message: field {key!r} must be a number or null")
    return float(value)
