"""The stub result backend (``memory://``): in this process, for unit tests. It stores encoded records, as the real
backends do, so a result that cannot be serialized fails here too."""

from __future__ import annotations

import threading
import time

from taskfleet.backends.base import ResultBackend, ResultRecord
from taskfleet.errors import ResultTimeout
from taskfleet.serializers import get_serializer
from taskfleet.settings import BackendSettings
from taskfleet.states import READY_STATES


class StubBackend(ResultBackend):
    """Thread-safe dict of encoded records with expiry; ``wait`` is woken by ``store`` through a condition."""

    def __init__(self, settings: BackendSettings) -> None:
        self.settings = settings
        self._serializer = get_serializer(settings.serializer)
        self._records: dict[str, tuple[bytes, float]] = {}
        self._cond = threading.Condition()

    def store(self, record: ResultRecord) -> None:
        data = record.encode(self._serializer)
        with self._cond:
            self._records[record.task_id] = (data, time.monotonic() + self.settings.result_expires_s)
            self._cond.notify_all()

    def get(self, task_id: str) -> ResultRecord | None:
        with self._cond:
            found = self._records.get(task_id)
            if found is None:
                return None
            data, expires_at = found
            if time.monotonic() >= expires_at:
                del self._records[task_id]
                return None
        return ResultRecord.decode(data, accept=self.settings.accept_content)

    def wait(self, task_id: str, timeout_s: float | None) -> ResultRecord:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while True:
                record = self.get(task_id)
                if record is not None and record.state in READY_STATES:
                    return record
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise ResultTimeout(f"task {task_id} not ready after {timeout_s}s")
                self._cond.wait(remaining)

    def forget(self, task_id: str) -> None:
        with self._cond:
            self._records.pop(task_id, None)

    def ping(self) -> None:
        return None

    def close(self) -> None:
        return None
