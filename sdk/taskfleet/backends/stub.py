"""The stub result backend (``memory://``): in this process, for unit tests. It stores encoded records, as the real
backends do, so a result that cannot be serialized fails here too.

As the SQLite backend does, it keeps every non-final record of a task (its state updates) beside the latest one, so
a waiter (``updates``, ``wait(on_update=)``) sees each update once, in order, whenever it gets to run."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from taskfleet.backends.base import ResultBackend, ResultRecord
from taskfleet.backends.joins import ChordPart, JoinDecision, decide, decision
from taskfleet.errors import ResultTimeout
from taskfleet.serializers import get_serializer
from taskfleet.settings import BackendSettings
from taskfleet.states import READY_STATES


class StubBackend(ResultBackend):
    """Thread-safe dict of encoded records with expiry; waits are woken by ``store`` through a condition."""

    def __init__(self, settings: BackendSettings) -> None:
        self.settings = settings
        self._serializer = get_serializer(settings.serializer)
        self._records: dict[str, tuple[bytes, float]] = {}
        self._updates: dict[str, list[bytes]] = {}  # each task's non-final records, in the order stored
        self._cond = threading.Condition()
        self._groups: dict[str, bytes] = {}
        self._joins: dict[str, _Join] = {}

    def store(self, record: ResultRecord) -> None:
        data = record.encode(self._serializer)
        with self._cond:
            self._records[record.task_id] = (data, time.monotonic() + self.settings.result_expires_s)
            if record.state not in READY_STATES:
                self._updates.setdefault(record.task_id, []).append(data)
            self._cond.notify_all()

    def get(self, task_id: str) -> ResultRecord | None:
        data = self._data(task_id)
        return None if data is None else self._decode(data)

    def updates(self, task_id: str, timeout_s: float | None) -> Iterator[ResultRecord]:
        """Yield the stored record, then each update stored since, until a ready record (``ResultBackend.updates``);
        raises ``ResultTimeout`` when ``timeout_s`` (None: forever) runs out."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            since = len(self._updates.get(task_id, ()))
            last = self._data(task_id)
        if last is not None:
            record = self._decode(last)
            yield record
            if record.ready:
                return
        while True:
            with self._cond:
                while True:
                    appended = self._updates.get(task_id, [])[since:]
                    current = self._data(task_id)
                    if appended or (current is not None and current != last):
                        break
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise ResultTimeout(f"task {task_id} not ready after {timeout_s}s")
                    self._cond.wait(remaining)
                since += len(appended)
            for data in appended:
                if data != last:
                    last = data
                    yield self._decode(data)
            if current is not None and current != last:
                record = self._decode(current)
                last = current
                if record.ready:  # a non-final record is yielded from the updates, in its place
                    yield record
                    return

    def forget(self, task_id: str) -> None:
        with self._cond:
            self._records.pop(task_id, None)
            self._updates.pop(task_id, None)

    def save_group(self, group_id: str, data: Mapping[str, Any]) -> None:
        with self._cond:
            self._groups[group_id] = self._serializer.dumps(dict(data))

    def restore_group(self, group_id: str) -> dict[str, Any] | None:
        with self._cond:
            data = self._groups.get(group_id)
        return None if data is None else dict(self._serializer.loads(data))

    def forget_group(self, group_id: str) -> None:
        with self._cond:
            self._groups.pop(group_id, None)

    def chord_part(self, chord_id: str, index: int, size: int, part: ChordPart) -> JoinDecision:
        """Record and decide under the lock (parts kept encoded, as the real backends keep them)."""
        with self._cond:
            join = self._joins.setdefault(chord_id, _Join())
            join.parts.setdefault(index, part.encode(self._serializer))
            parts = {i: ChordPart.decode(data, self._serializer) for i, data in join.parts.items()}
            action, claim = decide(index=index, size=size, mine=parts[index], count=len(parts),
                                   fired_by=join.fired_by, fired_kind=join.fired_kind, done=join.done)
            if claim is not None:
                join.fired_by, join.fired_kind = index, claim
            return decision(action, parts, index)

    def chord_fired(self, chord_id: str) -> None:
        with self._cond:
            self._joins.setdefault(chord_id, _Join()).done = True

    def ping(self) -> None:
        return None

    def close(self) -> None:
        return None

    def _data(self, task_id: str) -> bytes | None:
        with self._cond:
            found = self._records.get(task_id)
            if found is None:
                return None
            data, expires_at = found
            if time.monotonic() >= expires_at:
                del self._records[task_id]
                return None
            return data

    def _decode(self, data: bytes) -> ResultRecord:
        return ResultRecord.decode(data, accept=self.settings.accept_content)


@dataclass
class _Join:
    """One chord's join: encoded parts by header index, who fired it (and how), and whether that is done."""

    parts: dict[int, bytes] = field(default_factory=dict)
    fired_by: int | None = None
    fired_kind: str | None = None
    done: bool = False
