"""``HistoryStore``: the dashboard's durable history, one SQLite file (WAL), read by the web app (``model.History``)
and written by the ingester (``apply_events``, samples, the stream cursor, ``prune``).

One connection writes, under a lock (the ingester's thread, in practice); reads borrow a connection from a small pool
(one per concurrent reader, returned after each query, whichever thread asks), so pages are served while a batch is
written (WAL: readers see the last committed batch). Nothing but the connections stays in memory; SQLite's page
cache is bounded per connection (``schema.connect``).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

from taskfleet.dashboard import model
from taskfleet.dashboard.history import queries, retention, schema, writer
from taskfleet.dashboard.history.settings import HistorySettings
from taskfleet.errors import TaskfleetError

_P = ParamSpec("_P")
_T = TypeVar("_T")


class HistoryError(TaskfleetError):
    """The history file could not be opened, read or written (the SQLite error is its cause)."""


class HistoryStore:
    """The history in ``settings.path``, created if missing. Thread-safe; ``close()`` when done."""

    def __init__(self, settings: HistorySettings) -> None:
        self.settings = settings
        self._write_lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []  # reading connections not in use
        self._readers: list[sqlite3.Connection] = []  # every reading connection
        self._readers_lock = threading.Lock()
        self._closed = False
        try:
            self._writer = schema.connect(settings.path)
            schema.create(self._writer)
        except sqlite3.Error as exc:
            raise HistoryError(f"cannot open the history file {settings.path!r}: {exc}") from exc

    # -- the write side (the ingester) --

    def apply_events(self, events: Sequence[Mapping[str, Any]], *, cursor: str | None = None) -> None:
        """Fold a batch of decoded events into the history in one transaction, with ``cursor`` (the stream's,
        after this batch) saved in it. Worker events are ignored; malformed ones are logged and skipped; an event
        already applied (same task, type and timestamp) is not counted twice."""
        self._write(writer.apply_batch, events, cursor)

    def record_queue_samples(self, samples: Sequence[model.QueueSample]) -> None:
        self._write(writer.record_queue_samples, samples)

    def record_scale_samples(self, samples: Sequence[model.ScaleSample]) -> None:
        self._write(writer.record_scale_samples, samples)

    def load_cursor(self) -> str | None:
        """The event stream's cursor saved with the last batch; None before the first."""
        return self._read(writer.load_cursor)

    def save_cursor(self, cursor: str) -> None:
        self._write(writer.apply_batch, (), cursor)

    def prune(self, *, now: float) -> int:
        """Drop tasks (with their timelines) first seen more than ``retention_s`` before ``now`` (Unix seconds) or
        beyond the newest ``max_tasks``, and older buckets and samples; the number of tasks dropped. Works in short
        transactions, so readers and the next batch wait little."""
        return self._write(retention.prune, now=now, retention_s=self.settings.retention_s,
                           max_tasks=self.settings.max_tasks)

    # -- the read side (model.History) --

    def tasks(self, query: model.TaskQuery) -> model.TaskPage:
        return self._read(queries.tasks, query)

    def task(self, task_id: str) -> model.TaskEntry | None:
        return self._read(queries.task, task_id)

    def timeline(self, task_id: str) -> list[model.TaskEvent]:
        return self._read(queries.timeline, task_id)

    def children(self, task_id: str) -> list[model.TaskEntry]:
        return self._read(queries.children, task_id)

    def workflow(self, root_id: str, *, limit: int = 500) -> list[model.TaskEntry]:
        return self._read(queries.workflow, root_id, limit=limit)

    def buckets(self, *, since: float, until: float, step_s: float, name: str | None = None,
                queue: str | None = None) -> list[model.Bucket]:
        return self._read(queries.buckets, since=since, until=until, step_s=step_s, name=name, queue=queue)

    def task_names(self) -> list[str]:
        return self._read(queries.task_names)

    def queue_samples(self, *, since: float, until: float, queue: str | None = None) -> list[model.QueueSample]:
        return self._read(queries.queue_samples, since=since, until=until, queue=queue)

    def scale_samples(self, *, since: float, until: float, namespace: str | None = None,
                      name: str | None = None) -> list[model.ScaleSample]:
        return self._read(queries.scale_samples, since=since, until=until, namespace=namespace, name=name)

    def close(self) -> None:
        """Close every connection (reading threads' included); the store is unusable after."""
        with self._write_lock, self._readers_lock:
            self._closed = True
            for conn in self._readers:
                conn.close()
            self._readers.clear()
            self._idle.clear()
            self._writer.close()

    # -- plumbing --

    def _write(self, fn: Callable[Concatenate[sqlite3.Connection, _P], _T], *args: _P.args,
               **kwargs: _P.kwargs) -> _T:
        with self._write_lock:
            if self._closed:
                raise HistoryError("the history store is closed")
            try:
                return fn(self._writer, *args, **kwargs)
            except sqlite3.Error as exc:
                raise HistoryError(f"writing the history failed: {exc}") from exc

    def _borrow(self) -> sqlite3.Connection:
        with self._readers_lock:
            if self._closed:
                raise HistoryError("the history store is closed")
            if self._idle:
                return self._idle.pop()
        conn = schema.connect(self.settings.path, cache_kib=schema.READ_CACHE_KIB)
        conn.execute("PRAGMA query_only = 1")
        with self._readers_lock:
            self._readers.append(conn)
        return conn

    def _read(self, fn: Callable[Concatenate[sqlite3.Connection, _P], _T], *args: _P.args,
              **kwargs: _P.kwargs) -> _T:
        try:
            conn = self._borrow()
            try:
                return fn(conn, *args, **kwargs)
            finally:
                with self._readers_lock:
                    if not self._closed:
                        self._idle.append(conn)
        except sqlite3.Error as exc:
            raise HistoryError(f"reading the history failed: {exc}") from exc
