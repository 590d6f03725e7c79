"""The result-backend contract: store a task's state and result, look it up, and wait for it (pushed, not
polled), optionally seeing every state update on the way (``updates``, ``wait(on_update=)``)."""

from __future__ import annotations

import select
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from taskfleet.backends.joins import ChordPart, JoinDecision
from taskfleet.errors import DecodeError
from taskfleet.serializers import BY_CONTENT_TYPE, Serializer
from taskfleet.settings import BackendSettings
from taskfleet.states import READY_STATES, State, to_state

#: The record keys stored only with ``App(result_extended=True)`` (``ResultRecord.extended``).
_EXTENDED_KEYS = ("args", "kwargs", "queue")


@dataclass(frozen=True, kw_only=True)
class ResultRecord:
    """What the backend stores for one task id. ``exc_type`` is ``module.QualName`` of the exception.

    ``state`` is a ``State`` member, or a plain string for a custom state (``Task.update_state``), whose ``meta`` is
    kept in ``result`` (pass a built-in state as its member, as ``decode`` and ``to_state`` give it).

    ``extended`` holds what the worker stores only with ``App(result_extended=True)``: the task's ``args``,
    ``kwargs`` and ``queue`` (read them as the properties of those names). One field, not three: a record is made
    for every stored state, and each field of a frozen dataclass costs its ``__init__`` a call."""

    task_id: str
    state: State | str
    task: str | None = None
    result: Any = None
    exc_type: str | None = None
    exc_message: str | None = None
    exc_args: list[Any] | None = None
    traceback: str | None = None
    retries: int = 0
    date_done: float = field(default_factory=time.time)  # Unix time the record was stored
    extended: dict[str, Any] | None = None

    @property
    def args(self) -> list[Any] | None:
        """The task's positional arguments, when stored (``extended``)."""
        return None if self.extended is None else self.extended.get("args")

    @property
    def kwargs(self) -> dict[str, Any] | None:
        """The task's keyword arguments, when stored (``extended``)."""
        return None if self.extended is None else self.extended.get("kwargs")

    @property
    def queue(self) -> str | None:
        """The queue the task ran from, when stored (``extended``)."""
        return None if self.extended is None else self.extended.get("queue")

    @property
    def ready(self) -> bool:
        """True for a final state (SUCCESS, FAILURE, REVOKED)."""
        return self.state in READY_STATES

    def to_dict(self) -> dict[str, Any]:
        raw = {
            "task_id": self.task_id, "state": str(self.state), "task": self.task, "result": self.result,
            "exc_type": self.exc_type, "exc_message": self.exc_message, "exc_args": self.exc_args,
            "traceback": self.traceback, "retries": self.retries, "date_done": self.date_done,
        }
        if self.extended:
            raw.update(self.extended)
        return raw

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
            state = raw["state"]
            if not isinstance(state, str) or not state:
                raise ValueError(f"state must be a non-empty string, got {state!r}")
            return cls(
                task_id=raw["task_id"], state=to_state(state), task=raw.get("task"), result=raw.get("result"),
                exc_type=raw.get("exc_type"), exc_message=raw.get("exc_message"), exc_args=raw.get("exc_args"),
                traceback=raw.get("traceback"), retries=int(raw.get("retries") or 0),
                date_done=float(raw.get("date_done") or 0.0),
                extended=({key: raw.get(key) for key in _EXTENDED_KEYS} if "args" in raw else None),
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

    def get_many(self, task_ids: Sequence[str]) -> list[ResultRecord | None]:
        """The latest record of each of ``task_ids``, in their order (None where ``get`` gives None). One read per
        id here; a backend overrides it with one round trip for all (the asyncio waiter of
        ``taskfleet.async_calls`` reads every pending id with it)."""
        return [self.get(task_id) for task_id in task_ids]

    def wait_any(self, task_ids: Sequence[str], timeout_s: float, wake: socket.socket) -> list[ResultRecord]:
        """The ready records (SUCCESS, FAILURE, REVOKED) among ``task_ids``; when none is ready yet, first waits for
        one up to ``timeout_s`` seconds, or until ``wake`` is readable (its caller has new ids): possibly none.
        For one thread, which calls it again and again with every id it waits for (the asyncio result waiter of
        ``taskfleet.async_calls``). Here: one ``get_many`` and, when nothing is ready, a wait on ``wake`` (so the
        caller polls); Redis waits for the records pushed to it instead."""
        ready = [record for record in self.get_many(task_ids) if record is not None and record.ready]
        if not ready and timeout_s > 0:
            select.select([wake], [], [], timeout_s)
        return ready

    @abstractmethod
    def updates(self, task_id: str, timeout_s: float | None) -> Iterator[ResultRecord]:
        """Yield ``task_id``'s records as they are stored: the one stored when the iteration starts (if any), then
        every later one, in the order they were stored, each once; the iteration ends after yielding a ready one
        (SUCCESS, FAILURE, REVOKED). ``timeout_s`` (None: forever) bounds the whole iteration: when it runs out
        before a ready record, ``ResultTimeout`` is raised. Each backend documents how it is told of a new record
        (Redis pushes it; SQLite and the stub keep recent updates for their waiters)."""

    def wait(self, task_id: str, timeout_s: float | None,
             on_update: Callable[[ResultRecord], None] | None = None) -> ResultRecord:
        """Block until ``task_id`` is in a ready state (SUCCESS, FAILURE, REVOKED) and return its record; raises
        ``ResultTimeout`` when ``timeout_s`` (None: forever) runs out. ``on_update`` is called with each record
        ``updates`` yields, the ready one included, before this returns. A backend may override this with a faster
        path for waits without ``on_update``."""
        for record in self.updates(task_id, timeout_s):
            if on_update is not None:
                on_update(record)
            if record.ready:
                return record
        raise AssertionError("ResultBackend.updates ended before a ready record")  # pragma: no cover

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
