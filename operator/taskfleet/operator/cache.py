"""An informer: objects of one kind kept in memory by a list and a watch, so reads cost the API server nothing.

What client-go's reflector and store do, small: list (with its ``resourceVersion``), then watch from that version,
applying ADDED/MODIFIED/DELETED to a dict and following BOOKMARKs; a watch that ends (the server closes it after
``timeoutSeconds``) is resumed from the last version seen; ``410 Gone`` (that version was compacted away) or any
other failure re-lists after a back-off. One daemon thread per informer; reads take a lock and never call the API.

The API calls come from a ``Source`` (``kube.py`` builds them on the official client), so this module has no
Kubernetes import and is unit-tested with a fake source.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from taskfleet.errors import ClusterError
from taskfleet.worker.logging import get_logger

_log = get_logger("taskfleet.operator")

Json = dict[str, Any]
Key = tuple[str, str]
#: Seconds between attempts after a failed list or watch, growing to the last one and staying there.
BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)
#: Seconds a first read waits for the first list (a read after that never waits).
FIRST_LIST_WAIT_S = 10.0


class Gone(Exception):
    """The watch's resourceVersion is too old (HTTP 410): the informer must list again."""


class Source(Protocol):
    """The two API calls of an informer."""

    def list(self) -> tuple[list[Json], str | None]:
        """The objects and the collection's resourceVersion (None: watch from "now", with synthetic ADDED events
        for what exists). Raises ClusterError."""

    def watch(self, resource_version: str | None, stopped: threading.Event) -> Iterator[Json]:
        """Watch events (``{"type": ..., "object": ...}``) from ``resource_version`` until the server ends the
        watch or ``stopped`` is set. Raises Gone on 410, ClusterError on other failures."""

    def close(self) -> None:
        """End a watch in progress (called from another thread, after ``stopped`` is set)."""


@dataclass
class Counters:
    """API requests an informer made (the scale benchmark reports them)."""

    lists: int = 0
    watches: int = 0
    events: int = 0


def key_of(obj: Json) -> Key:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def newer_or_equal(candidate: Json, current: Json | None) -> bool:
    """Whether ``candidate`` is at least as recent as ``current``. resourceVersions are opaque to clients, but the
    API server's are etcd revisions (integers); when either is not, the candidate wins."""
    if current is None:
        return True
    try:
        return int(candidate["metadata"]["resourceVersion"]) >= int(current["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return True


class Informer:
    """A thread-safe, watch-fed copy of the objects ``source`` lists. ``transform`` trims each object before it is
    stored (memory: e.g. drop ``managedFields`` or Secret keys nobody reads)."""

    def __init__(self, source: Source, *, name: str, transform: Callable[[Json], Json] | None = None,
                 backoff_s: tuple[float, ...] = BACKOFF_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.counters = Counters()
        self._source = source
        self._transform = transform or (lambda obj: obj)
        self._backoff_s = backoff_s
        self._clock = clock
        self._lock = threading.Lock()
        self._store: dict[Key, Json] = {}
        self._synced = False
        self._attempted = threading.Event()
        self._error: str | None = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_read_s = clock()

    def start(self) -> Informer:
        self._thread = threading.Thread(target=self._run, name=f"informer {self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """End the thread: it leaves its watch at once and makes no more requests."""
        self._stopped.set()
        self._source.close()

    def get(self, namespace: str, name: str, *, wait_s: float = FIRST_LIST_WAIT_S) -> Json | None:
        """The stored object, or None when it does not exist. Before the first list succeeded (waiting up to
        ``wait_s`` for it), raises ClusterError with the reason the list failed."""
        self.last_read_s = self._clock()
        if not self._attempted.is_set():
            self._attempted.wait(wait_s)
        with self._lock:
            if not self._synced:
                raise ClusterError(f"{self.name}: not listed yet ({self._error or 'waiting for the API server'})")
            return self._store.get((namespace, name))

    def remember(self, obj: Json) -> None:
        """Store an object this process just wrote (write-through), so the next read does not see the version
        before its own write while the watch event is on its way."""
        obj = self._transform(obj)
        with self._lock:
            if newer_or_equal(obj, self._store.get(key_of(obj))):
                self._store[key_of(obj)] = obj

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._store.pop((namespace, name), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._store)

    def _run(self) -> None:
        failures = 0
        version: str | None = None
        listed = False
        while not self._stopped.is_set():
            try:
                if not listed:
                    version = self._list()
                    listed = True
                version = self._watch(version)
                failures = 0
            except Gone:
                listed = False  # re-list at once: nothing is wrong, the version was compacted away
            except ClusterError as exc:
                with self._lock:
                    self._error = str(exc)
                self._attempted.set()
                delay = self._backoff_s[min(failures, len(self._backoff_s) - 1)]
                failures += 1
                listed = False  # after a failure, list again: events may have been missed meanwhile
                _log.warning("informer_failed", informer=self.name, error=str(exc), retry_in_s=delay)
                self._stopped.wait(delay)

    def _list(self) -> str | None:
        self.counters.lists += 1
        items, version = self._source.list()
        fresh = {key_of(o): self._transform(o) for o in items}
        with self._lock:
            self._store = fresh
            self._synced = True
            self._error = None
        self._attempted.set()
        return version

    def _watch(self, version: str | None) -> str | None:
        """One watch request; returns the version to resume from."""
        self.counters.watches += 1
        for event in self._source.watch(version, self._stopped):
            if self._stopped.is_set():
                break
            self.counters.events += 1
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise Gone(str(obj.get("message")))
                raise ClusterError(f"watch error: {obj.get('message') or obj}")
            version = (obj.get("metadata") or {}).get("resourceVersion") or version
            if kind == "BOOKMARK":
                continue
            with self._lock:
                if kind == "DELETED":
                    self._store.pop(key_of(obj), None)
                elif kind in ("ADDED", "MODIFIED"):
                    self._store[key_of(obj)] = self._transform(obj)
        return version
