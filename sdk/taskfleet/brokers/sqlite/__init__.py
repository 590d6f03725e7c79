"""The SQLite broker (``sqlite:///path``) and its beat store, in one database file.

- ``_broker``: ``SQLiteBroker``;
- ``_beat``: ``SQLiteBeatStore``, its tables in the broker's file;
- ``_schema``: the broker's tables and statements, shared by both.

Connections, transactions and ``fork()`` handling: ``taskfleet._connections.sqlite``. Everything but the two classes
is private to this package.
"""

from __future__ import annotations

from taskfleet.brokers.sqlite._beat import SQLiteBeatStore
from taskfleet.brokers.sqlite._broker import SQLiteBroker

__all__ = ["SQLiteBeatStore", "SQLiteBroker"]
