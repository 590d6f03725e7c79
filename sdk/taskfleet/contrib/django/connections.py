"""What a worker does with Django's database connections, so that no two processes share one and none is used
after it went stale.

- In the supervisor, before each fork: close its connections (``close_before_fork``), so a child never inherits a
  live one. (On PostgreSQL and MySQL two processes on one socket corrupt each other's sessions; SQLite forbids
  carrying an open connection across ``fork()``.)
- In a new child: forget any connection it inherited anyway, without closing it (``forget_inherited``): closing
  would talk on the parent's socket, which ends the parent's session.
- Around each task, as Django does around each request: ``close_old_connections()`` before and after (with the
  default ``CONN_MAX_AGE = 0`` that closes every connection after every task; with a longer age the connection is
  kept and reused, and dropped once it is older, broken, or left with autocommit changed; ``CONN_HEALTH_CHECKS``
  works as it does for requests). After a task that did not succeed every connection is closed whatever its age
  (``after_task``): a task stopped by its soft time limit in the middle of a query can leave a connection that Django
  still takes for usable.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.cache import close_caches
from django.db import Error, close_old_connections, connections

log = logging.getLogger("taskfleet.contrib.django")

#: The raw connections a child inherited and let go of: kept referenced so that they are never finalized (a
#: finalizer would close them, on the parent's socket).
_inherited: list[Any] = []


def close_all() -> None:
    """Close this thread's open database connections, each on its own: one that fails to close (it was broken
    already) is logged and the others are still closed."""
    for conn in connections.all(initialized_only=True):
        try:
            conn.close()
        except Error as exc:  # a broken connection can fail to close; it is gone either way
            log.debug("closing database connection %r failed: %s", conn.alias, exc)


def close_before_fork() -> None:
    """In the supervisor, before a fork: close its connections and connection pools (Django 5.1's
    ``OPTIONS["pool"]`` on PostgreSQL), so the child starts with none."""
    close_all()
    for conn in connections.all(initialized_only=True):
        if conn.settings_dict.get("OPTIONS", {}).get("pool"):  # PostgreSQL (and Oracle) only
            try:
                conn.close_pool()
            except Error as exc:
                log.debug("closing the connection pool of %r failed: %s", conn.alias, exc)


def forget_inherited() -> None:
    """In a new child: let go of every connection inherited from the parent without closing it (no network I/O),
    so the child's first query opens its own."""
    for conn in connections.all(initialized_only=True):
        if conn.connection is not None:
            _inherited.append(conn.connection)
            conn.connection = None


def before_task() -> None:
    """Before a task: drop connections that are too old or broken (Django's ``close_old_connections``)."""
    close_old_connections()


def after_task(*, succeeded: bool) -> None:
    """After a task: as ``before_task`` when it ``succeeded``, else close every connection; then
    ``close_caches()``, as Django does at the end of a request."""
    if succeeded:
        close_old_connections()
    else:
        close_all()
    close_caches()
