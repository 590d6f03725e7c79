"""Control requests and replies: the messages of ``taskfleet inspect``, ``taskfleet control`` and ``app.control``.

A client broadcasts a ``ControlRequest`` to every worker of the app (``FleetStore.publish_control``); each worker
whose id is in ``destination`` (or every worker when it is None) carries the command out and, when ``reply_to`` is
set, answers one ``ControlReply`` (``FleetStore.reply``), which the client collects until ``timeout_s`` runs out or
every expected worker has answered (``FleetStore.collect_replies``).

Both are JSON. A worker that receives bytes ``ControlRequest.from_json`` refuses (``ControlError``) logs it and
drops it; an unknown command or bad arguments get a reply with ``ok=False`` and the reason.

Command names are Celery's (``rate_limit``, ``add_consumer``...); the hyphenated CLI spellings
(``rate-limit``) name the same commands (``canonical_command``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from taskfleet.errors import ControlError

PROTOCOL_VERSION = 1
DEFAULT_TIMEOUT_S = 1.0
#: A request older than this when a worker reads it is dropped unanswered (its client has stopped waiting).
MAX_REQUEST_AGE_S = 60.0

#: Read-only commands (``taskfleet inspect ...``, ``app.control.inspect().<name>()``) and what each answers.
INSPECT_COMMANDS: Mapping[str, str] = {
    "ping": "pong: the worker is alive and reads control messages",
    "active": "the tasks its children are running now",
    "reserved": "messages its children hold (prefetched) and have not started",
    "scheduled": "messages it holds whose ETA is still ahead (the broker keeps delayed messages: see the docs)",
    "registered": "the task names its app registered",
    "stats": "counts, uptime, pool size, queues, rate and time limits in force",
    "revoked": "the revoked task ids it honours",
}
#: Commands that change a worker (``taskfleet control ...``, ``app.control.<name>(...)``).
CONTROL_COMMANDS: Mapping[str, str] = {
    "revoke": "revoke task ids (and with terminate, signal the children running them)",
    "rate_limit": "set a task's rate limit (e.g. '10/m'; None or '' removes it)",
    "time_limit": "set a task's soft and hard time limits (seconds)",
    "add_consumer": "start consuming a queue",
    "cancel_consumer": "stop consuming a queue",
    "pool_grow": "add N children",
    "pool_shrink": "remove N idle children (down to one)",
    "shutdown": "drain and stop the worker, as SIGTERM does",
}
COMMANDS: frozenset[str] = frozenset(INSPECT_COMMANDS) | frozenset(CONTROL_COMMANDS)


def canonical_command(name: str) -> str:
    """The command ``name`` spells (``rate-limit`` and ``rate_limit`` are one); ``ControlError`` for an unknown one,
    naming the known ones."""
    canonical = name.strip().replace("-", "_").lower()
    if canonical not in COMMANDS:
        raise ControlError(f"unknown control command {name!r}; known: {', '.join(sorted(COMMANDS))}")
    return canonical


def _decode_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ControlError(f"{what} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ControlError(f"{what} is not a JSON object")
    if data.get("v") != PROTOCOL_VERSION:
        raise ControlError(f"{what} has protocol version {data.get('v')!r}, expected {PROTOCOL_VERSION}")
    return data


@dataclass(frozen=True, slots=True)
class ControlRequest:
    """One command to the workers of an app. ``destination``: worker ids, or None for every worker."""

    command: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    destination: tuple[str, ...] | None = None
    reply_to: str | None = None  # None: no reply wanted
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    sent_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        object.__setattr__(self, "command", canonical_command(self.command))

    def addressed_to(self, worker: str) -> bool:
        return self.destination is None or worker in self.destination

    def to_json(self) -> bytes:
        return json.dumps({"v": PROTOCOL_VERSION, "id": self.id, "command": self.command,
                           "arguments": dict(self.arguments),
                           "destination": list(self.destination) if self.destination is not None else None,
                           "reply_to": self.reply_to, "sent_at": self.sent_at}, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ControlRequest:
        """Decode a request; ``ControlError`` names what is wrong (the worker logs it and drops the message)."""
        data = _decode_object(raw, "control request")
        try:
            arguments = data.get("arguments")
            arguments = {} if arguments is None else arguments
            destination = data.get("destination")
            if not isinstance(arguments, dict):
                raise ControlError("control request arguments are not an object")
            if destination is not None and not (isinstance(destination, list)
                                                and all(isinstance(d, str) for d in destination)):
                raise ControlError("control request destination is not a list of worker ids")
            reply_to = data.get("reply_to")
            if reply_to is not None and not isinstance(reply_to, str):
                raise ControlError("control request reply_to is not a string")
            return cls(command=str(data["command"]), arguments=arguments,
                       destination=tuple(destination) if destination is not None else None,
                       reply_to=reply_to, id=str(data["id"]), sent_at=float(data["sent_at"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ControlError(f"malformed control request: {exc!r}") from exc


@dataclass(frozen=True, slots=True)
class ControlReply:
    """One worker's answer to one request: ``result`` when ``ok``, else ``error`` says why."""

    request_id: str
    worker: str
    ok: bool
    result: Any = None
    error: str | None = None

    def to_json(self) -> bytes:
        return json.dumps({"v": PROTOCOL_VERSION, "request_id": self.request_id, "worker": self.worker,
                           "ok": self.ok, "result": self.result, "error": self.error},
                          separators=(",", ":"), default=str).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ControlReply:
        data = _decode_object(raw, "control reply")
        try:
            return cls(request_id=str(data["request_id"]), worker=str(data["worker"]), ok=bool(data["ok"]),
                       result=data.get("result"), error=data.get("error"))
        except (KeyError, TypeError) as exc:
            raise ControlError(f"malformed control reply: {exc!r}") from exc


def replies_by_worker(replies: Sequence[ControlReply]) -> dict[str, Any]:
    """Celery's shape of an inspect answer: ``{worker: result}`` (a refused command's value is ``{"error": ...}``)."""
    return {r.worker: (r.result if r.ok else {"error": r.error}) for r in replies}
