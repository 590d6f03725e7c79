"""The SQLite broker (``sqlite:///path``), its beat store and its fleet store, in one database file.

- ``_broker``: ``SQLiteBroker``;
- ``_beat``: ``SQLiteBeatStore``, its tables in the broker's file;
- ``_fleet``: ``SQLiteFleetStore``, the fleet's registry, revocations, control and events in the same file;
- ``_schema``: the broker's tables and statements, shared by all three.

Connections, transactions and ``fork()`` handling: ``taskfleet._connections.sqlite``. Everything but the three
classes is private to this package.
"""

from __future__ import annotations

from taskfleet.brokers.sqlite._beat import SQLiteBeatStore
from taskfleet.brokers.sqlite._broker import SQLiteBroker
from taskfleet.brokers.sqlite._fleet import SQLiteFleetStore

__all__ = ["SQLiteBeatStore", "SQLiteBroker", "SQLiteFleetStore"]
