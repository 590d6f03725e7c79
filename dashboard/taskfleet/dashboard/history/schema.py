"""The history file's tables and indexes, and how a connection to it is opened.

Tasks are keyed and ordered by ``seq``, made from their first event's timestamp (``keys``: microseconds times 1024,
plus a slot for tasks seen in the same microsecond), which every index carries implicitly: newest first is ``seq``
descending, and ``since``/``until`` are a range of ``seq``. Each filter has an index whose rows come out newest
first without a sort (``name``, ``state``, ``queue``, ``worker``, ``name``+``state``, ``queue``+``state``), the id
prefix is a range on the unique ``task_id`` index, and args text search is an FTS5 trigram index keyed by ``seq``:
every page is a short index walk from the cursor, however large the history.

Outcomes are kept per minute for each task name and queue, and rolled up on write for each name (queue ``*``), each
queue (name ``*``) and everything (``*``, ``*``): a day's chart of any of them reads 1,440 rows.
"""

from __future__ import annotations

import sqlite3

#: Bumped when the tables change; a file of another version is refused (the history is rebuilt from events).
SCHEMA_VERSION = 1

TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY,
    task_id TEXT NOT NULL UNIQUE,
    name TEXT, state TEXT NOT NULL, queue TEXT, worker TEXT,
    args TEXT, kwargs TEXT, result TEXT, exception TEXT, traceback TEXT,
    retries INTEGER NOT NULL DEFAULT 0, root_id TEXT, parent_id TEXT, eta TEXT,
    sent_at REAL, received_at REAL, started_at REAL, finished_at REAL, runtime_s REAL,
    first_seen_at REAL NOT NULL, updated_at REAL NOT NULL,
    attempt INTEGER NOT NULL, state_ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_name ON tasks (name);
CREATE INDEX IF NOT EXISTS tasks_state ON tasks (state);
CREATE INDEX IF NOT EXISTS tasks_queue ON tasks (queue);
CREATE INDEX IF NOT EXISTS tasks_worker ON tasks (worker);
CREATE INDEX IF NOT EXISTS tasks_name_state ON tasks (name, state);
CREATE INDEX IF NOT EXISTS tasks_queue_state ON tasks (queue, state);
CREATE INDEX IF NOT EXISTS tasks_root ON tasks (root_id) WHERE root_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_parent ON tasks (parent_id) WHERE parent_id IS NOT NULL;
CREATE VIRTUAL TABLE IF NOT EXISTS tasks_text USING fts5 (args, kwargs, content='', tokenize='trigram');
CREATE TABLE IF NOT EXISTS timeline (
    task_id TEXT NOT NULL, type TEXT NOT NULL, timestamp REAL NOT NULL,
    worker TEXT, retries INTEGER NOT NULL DEFAULT 0, detail TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS timeline_task ON timeline (task_id, timestamp, type);
CREATE TABLE IF NOT EXISTS outcomes (
    name TEXT NOT NULL, queue TEXT NOT NULL, minute INTEGER NOT NULL,
    succeeded INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0, retried INTEGER NOT NULL DEFAULT 0,
    runtimes BLOB NOT NULL DEFAULT x'',  -- histogram.pack
    PRIMARY KEY (name, queue, minute)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS outcomes_minute ON outcomes (minute);
CREATE TABLE IF NOT EXISTS queue_samples (
    at REAL NOT NULL, queue TEXT NOT NULL, ready INTEGER NOT NULL, in_flight INTEGER, delayed INTEGER, dead INTEGER
);
CREATE INDEX IF NOT EXISTS queue_samples_at ON queue_samples (at);
CREATE INDEX IF NOT EXISTS queue_samples_queue ON queue_samples (queue, at);
CREATE TABLE IF NOT EXISTS scale_samples (
    at REAL NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL, replicas INTEGER NOT NULL, desired INTEGER,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS scale_samples_at ON scale_samples (at);
CREATE INDEX IF NOT EXISTS scale_samples_name ON scale_samples (namespace, name, at);
"""


#: KiB of page cache of the writing connection, and of each reading one.
WRITE_CACHE_KIB = 16_384
READ_CACHE_KIB = 4096


def connect(path: str, *, cache_kib: int = WRITE_CACHE_KIB) -> sqlite3.Connection:
    """A connection to the history file: WAL (readers never wait for the writer), ``synchronous=NORMAL`` (a power cut
    may lose the last batches, which the saved cursor then reads again), autocommit off by default: the store opens
    its transactions itself."""
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"PRAGMA cache_size = -{int(cache_kib)}")
    return conn


def create(conn: sqlite3.Connection) -> None:
    """Create what is missing; refuse a file made by another schema version."""
    conn.executescript(TABLES)
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    if row is None:
        conn.execute("INSERT INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
    elif int(row[0]) != SCHEMA_VERSION:
        raise sqlite3.DatabaseError(f"history file has schema {row[0]}, this version reads {SCHEMA_VERSION}")
