"""The result-backend contract: store a task's state and result, look it up, and wait for it (pushed, not
polled)."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from taskfleet.backends.joins import ChordPart, JoinDecision
from taskfleet.errors import DecodeError
from taskfleet.serializers import BY_CONTENT_TYPE, Serializer
from taskfleet.settings import BackendSettings
from taskfleet.states import State


@dataclass(frozen=True, kw_only=True)
class ResultRecord:
    """What the backend stores for one task id. ``exc_type`` is ``module.QualName`` of the exception."""

    task_id: str
    state: State
    task: str | None = None
    result: Any = None
    exc_type: str | None = None
    exc_message: str | None = None
    exc_args: list[Any] | None = None
    traceback: str | None = None
    retries: int = 0
    date_done: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id, "state": str(self.state), "task": self.task, "result": self.result,
            "exc_type": self.exc_type, "exc_message": self.exc_message, "exc_args": self.exc_args,
            "traceback": self.traceback, "retries": self.retries, "date_done": self.date_done,
        }

    def encode(self, serializer: Serializer) -> bytes:
        return serializer.content_type.encode("ascii") + b"\n" + serializer.dumps(self.to_dict())

    @classmethod
    def decode(cls, data: bytes, *, accept: frozenset[str]) -> ResultRecord:
        head, _, body = data.partition(b"\n")
        serializer = BY_CONTENT_TYPE.get(head.decode("ascii", "replace"))
        if serializer is None or serializer.name not in accept:
            raise DecodeError(f"result stored as {head[:64]!r}, which is not accepted here")
        raw = serializer.loads(body)
        try:
            return cls(
                task_id=raw["task_id"], state=State(raw["state"]), task=raw.get("task"), result=raw.get("result"),
                exc_type=raw.get("exc_type"), exc_message=raw.get("exc_message"), exc_args=raw.get("exc_args"),
                traceback=raw.get("traceback"), retries=int(raw.get("retries") or 0),
                date_done=float(raw.get("date_done") or 0.0),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DecodeError(f"malformed result record: {exc}") from exc


class ResultBackend(ABC):
    """Stores ``ResultRecord``s for ``settings.result_expires_s`` seconds. Not shared across ``fork()``."""

    settings: BackendSettings

    @abstractmethod
    def store(self, record: ResultRecord) -> None:
        """Save ``record`` (replacing the previous state) and wake every ``wait`` on its task id."""

    @abstractmethod
    def get(self, task_id: str) -> ResultRecord | None:
        """The latest record for ``task_id``, or None (PENDING / unknown / expired)."""

    @abstractmethod
    def wait(self, task_id: str, timeout_s: float | None) -> ResultRecord:
        """Block until ``task_id`` is in a ready state (SUCCESS, FAILURE, REVOKED) and return its record.
        The backend pushes the record to the waiter; no polling loop. Raises ``ResultTimeout``."""

    @abstractmethod
    def forget(self, task_id: str) -> None:
        """Delete the stored record."""

    # -- workflows (taskfleet.canvas): saved groups and chord joins ----------------------------------------------

    @abstractmethod
    def save_group(self, group_id: str, data: Mapping[str, Any]) -> None:
        """Store a group's result list (``GroupResult.save``) for ``result_expires_s``."""

    @abstractmethod
    def restore_group(self, group_id: str) -> dict[str, Any] | None:
        """What ``save_group`` stored under ``group_id``, or None."""

    @abstractmethod
    def forget_group(self, group_id: str) -> None:
        """Delete a saved group."""

    @abstractmethod
    def chord_part(self, chord_id: str, index: int, size: int, part: ChordPart) -> JoinDecision:
        """Record header task ``index`` (of ``size``) of chord ``chord_id`` and decide, in the same atomic operation
        (one round trip), what its worker does next (see ``taskfleet.backends.joins``)."""

    @abstractmethod
    def chord_fired(self, chord_id: str) -> None:
        """Record that the firing (or failing) of chord ``chord_id`` is done: its body or errbacks are sent."""

    @abstractmethod
    def ping(self) -> None:
        """Return when the backend answers; raise ``BrokerConnectionError`` when it does not."""

    @abstractmethod
    def close(self) -> None:
        """Close connections."""
