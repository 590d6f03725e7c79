"""A worker's heartbeat record: who the worker is, what it consumes, and what each of its children is doing.

A worker publishes one every ``heartbeat_interval_s`` (default 2 s) into the fleet store with an expiry of about
three intervals, so a dead worker leaves the registry by itself (``FleetStore.heartbeat``). Readers
(``taskfleet workers``, the dashboard, the operator's scale-in) decode it with ``WorkerRecord.from_json``, which
refuses a malformed record with ``DecodeError`` (a reader skips it and goes on).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from taskfleet.errors import DecodeError

RECORD_VERSION = 1
DEFAULT_HEARTBEAT_INTERVAL_S = 2.0
#: A worker whose last heartbeat is older than this many intervals is gone (its record expires then).
MISSED_HEARTBEATS = 3


def worker_id(hostname: str | None = None, pid: int | None = None) -> str:
    """The worker's stable id: ``<hostname>:<pid>`` (on Kubernetes the hostname is the pod's name)."""
    return f"{hostname or socket.gethostname()}:{pid if pid is not None else os.getpid()}"


@dataclass(frozen=True, slots=True)
class PodInfo:
    """The worker's pod on Kubernetes, from the downward API (``TASKFLEET_POD_NAME``, ``TASKFLEET_POD_NAMESPACE``,
    ``TASKFLEET_POD_UID``, which the operator's Deployment sets); None outside Kubernetes."""

    name: str
    namespace: str
    uid: str


@dataclass(frozen=True, slots=True)
class ChildState:
    """One child process: idle (``task_id`` None), or busy with a task since ``since`` (Unix seconds)."""

    slot: int
    pid: int | None
    task_id: str | None = None
    task: str | None = None
    since: float | None = None

    @property
    def busy(self) -> bool:
        return self.task_id is not None


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """One worker's heartbeat. Times are Unix seconds."""

    id: str
    app: str
    hostname: str
    pid: int
    queues: tuple[str, ...]
    concurrency: int
    version: str
    started_at: float
    sent_at: float
    processed: int = 0  # tasks finished (any outcome)
    failed: int = 0  # tasks finished in FAILURE, dead-lettered or past their time limit
    children: tuple[ChildState, ...] = ()
    pod: PodInfo | None = None
    #: The heartbeat interval this worker uses: readers call a worker gone after ``MISSED_HEARTBEATS`` of them.
    heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S
    draining: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def busy(self) -> int:
        return sum(1 for child in self.children if child.busy)

    def to_json(self) -> bytes:
        data = asdict(self)
        data["v"] = RECORD_VERSION
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> WorkerRecord:
        """Decode a record; ``DecodeError`` names what is wrong (a reader skips such a record)."""
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or data.get("v") != RECORD_VERSION:
                raise DecodeError(f"not a version {RECORD_VERSION} worker record")
            pod = data.get("pod")
            return cls(
                id=str(data["id"]), app=str(data["app"]), hostname=str(data["hostname"]), pid=int(data["pid"]),
                queues=tuple(str(q) for q in data["queues"]), concurrency=int(data["concurrency"]),
                version=str(data["version"]), started_at=float(data["started_at"]), sent_at=float(data["sent_at"]),
                processed=int(data.get("processed", 0)), failed=int(data.get("failed", 0)),
                children=tuple(ChildState(slot=int(c["slot"]), pid=c.get("pid"), task_id=c.get("task_id"),
                                          task=c.get("task"), since=c.get("since"))
                               for c in data.get("children", ())),
                pod=PodInfo(**pod) if pod else None,
                heartbeat_interval_s=float(data.get("heartbeat_interval_s", DEFAULT_HEARTBEAT_INTERVAL_S)),
                draining=bool(data.get("draining", False)), extra=dict(data.get("extra") or {}),
            )
        except DecodeError:
            raise
        except (ValueError, TypeError, KeyError) as exc:
            raise DecodeError(f"malformed worker record: {exc!r}") from exc


def pod_from_env(environ: Mapping[str, str]) -> PodInfo | None:
    """The pod named by the downward-API variables, or None when they are not all set (read at entrypoints)."""
    name, namespace, uid = (environ.get(f"TASKFLEET_POD_{key}") for key in ("NAME", "NAMESPACE", "UID"))
    if name and namespace and uid:
        return PodInfo(name=name, namespace=namespace, uid=uid)
    return None


def decode_records(raw: Iterable[bytes]) -> list[WorkerRecord]:
    """The heartbeat records that decode; a malformed one is skipped (a worker of another version, or garbage,
    says nothing about the live fleet)."""
    records = []
    for item in raw:
        try:
            records.append(WorkerRecord.from_json(item))
        except DecodeError:
            continue
    return records
