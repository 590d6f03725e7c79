"""SQLite database files shared by the SQLite broker, result backend and beat store (private to ``taskfleet``): URL
parsing, one lazily opened connection per process (guarded by a lock, so threads may share it), WAL, busy timeouts,
short explicit transactions and error translation.

``sqlite:///relative/path.db`` is relative to the working directory when the client is made (resolved at once, so
later ``chdir`` calls and forked children agree); ``sqlite:////absolute/path.db`` is absolute, as in SQLAlchemy.
In-memory databases are refused: their point here is to be shared by processes.

Fork: a connection is never used or closed in a child. ``os.register_at_fork`` moves every inherited connection
into a list the child keeps for its lifetime (closing a connection inherited across ``fork()`` may touch locks and
the WAL index the parent relies on); the child opens its own on first use. Every database's lock is held across
``fork()`` itself, so no thread of the parent is inside a statement when the child is made (SQLite's per-process lock
bookkeeping copied mid-statement would leave the child locked out of the file for good).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import unquote, urlsplit

from taskfleet.errors import BrokerConnectionError, ConfigurationError, TaskfleetError

#: How long a statement waits for another process's write lock before failing ("database is locked"). Writers
#: hold it for one short transaction (about a millisecond), so only a stuck process or a slow disk reaches this.
BUSY_TIMEOUT_S = 5.0

#: Errors of SQLite that mean the file cannot be opened, is locked past ``BUSY_TIMEOUT_S`` or the disk failed:
#: the equivalent of an unreachable server (retried by publishers, reported as ``BrokerConnectionError``).
_UNAVAILABLE = (sqlite3.OperationalError, OSError)

_LIVE: weakref.WeakSet[SQLiteDatabase] = weakref.WeakSet()
#: Connections inherited across fork(): kept referenced (never closed) for the life of the child.
_INHERITED: list[sqlite3.Connection] = []


def sqlite_path(url: str) -> str:
    """The absolute file path of a ``sqlite:///`` URL; anything else (host, options, in-memory) is a
    ``ConfigurationError``."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite":
        raise ConfigurationError(f"not a sqlite URL: {url!r}")
    if parts.netloc:
        raise ConfigurationError(
            f"sqlite URL {url!r} names a host: use sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    if parts.query or parts.fragment:
        raise ConfigurationError(f"sqlite URL {url!r} takes no options")
    path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
    if not path or path == ":memory:" or path.startswith("file:") or path.endswith("/"):
        raise ConfigurationError(
            f"sqlite URL {url!r} names no database file (an in-memory database cannot be shared across processes): "
            "use sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    return os.path.abspath(path)


class SQLiteDatabase:
    """One database file, opened lazily in each process that uses it. Thread-safe: calls are serialised by a lock
    (each holds it for one short statement or transaction, never while a caller sleeps)."""

    def __init__(self, url: str, *, schema: str, what: str, error: type[TaskfleetError]) -> None:
        """``schema`` is SQL run on every open (``CREATE ... IF NOT EXISTS``); ``what`` names the client in
        errors; ``error`` is raised for failures other than an unavailable database."""
        self.path = sqlite_path(url)
        self._schema = schema
        self._what = f"{what} {self.path}"
        self._error = error
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        _LIVE.add(self)

    @contextmanager
    def read(self, action: str) -> Iterator[sqlite3.Connection]:
        """The connection, for statements that run in autocommit (each SELECT sees one consistent snapshot)."""
        with self._lock, self.translate(action):
            yield self._connection()

    @contextmanager
    def write(self, action: str) -> Iterator[sqlite3.Connection]:
        """The connection inside ``BEGIN IMMEDIATE`` … ``COMMIT``: the write lock is taken up front, so two
        processes never read the same rows and then both update them; rolled back when the block raises."""
        with self._lock, self.translate(action):
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def translate(self, action: str) -> Iterator[None]:
        """Inside this block an unavailable database raises ``BrokerConnectionError`` and any other SQLite error
        raises the client's error."""
        try:
            yield
        except _UNAVAILABLE as exc:
            raise BrokerConnectionError(f"{self._what} unavailable during {action}: {exc}") from exc
        except sqlite3.Error as exc:
            raise self._error(f"{self._what} failed {action}: {exc}") from exc

    def ping(self) -> None:
        """Open the file (creating it and its tables when missing); raises ``BrokerConnectionError`` when it
        cannot."""
        with self.read("ping") as conn:
            conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        """Close this process's connection (it reopens on next use)."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == os.getpid():
                conn.close()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        if self._conn is not None:  # inherited without the fork hook (e.g. os.fork from C): never close it here
            _INHERITED.append(self._conn)
            self._conn = None
        parent = os.path.dirname(self.path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
            try:
                self._prepare(conn)
                break
            except sqlite3.OperationalError as exc:
                conn.close()
                # Processes opening a new file at once: one may find it locked while another switches it to WAL,
                # where SQLite does not wait (busy_timeout or not). Open again until the busy timeout.
                if not _busy(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)
            except BaseException:
                conn.close()
                raise
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL").fetchone()
        # NORMAL in WAL mode: a commit survives a process crash; only an OS crash may lose the last ones.
        conn.execute("PRAGMA synchronous = NORMAL")
        # The schema under the write lock taken up front (BEGIN IMMEDIATE waits for it): in WAL mode a statement that
        # turns a read into a write on a snapshot another process has just changed fails at once instead.
        conn.executescript(f"BEGIN IMMEDIATE;\n{self._schema}\nCOMMIT;")


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite refused because another connection holds a lock (SQLITE_BUSY or SQLITE_LOCKED, with any
    extended code)."""
    return exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _forget_inherited_connections() -> None:
    for database in list(_LIVE):
        if database._conn is not None:
            _INHERITED.append(database._conn)
            database._conn = None
        database._lock = threading.RLock()  # a lock held by another parent thread at fork() time stays held
    _HELD.clear()  # the parent's _quiesce_before_fork holds the old locks; the child has new ones


def _quiesce_before_fork() -> None:
    # A connection in the middle of a statement at fork() time leaves SQLite's per-process lock state (the WAL
    # index locks of unixShmNode) in the child saying that a connection of the child holds those locks: its own
    # connections then get "database is locked" forever. Hold every database's lock across fork().
    for database in list(_LIVE):
        database._lock.acquire()
        _HELD.append(database)


def _release_after_fork_in_parent() -> None:
    while _HELD:
        _HELD.pop()._lock.release()


_HELD: list[SQLiteDatabase] = []

if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_quiesce_before_fork, after_in_parent=_release_after_fork_in_parent,
                        after_in_child=_forget_inherited_connections)
