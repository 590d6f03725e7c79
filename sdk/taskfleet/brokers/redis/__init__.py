"""The Redis broker (``redis://``, ``rediss://``, ``unix://``) and its beat store.

- ``_broker``: ``RedisBroker``, the hot paths packed ahead of time on ``taskfleet._connections.redis``;
- ``_beat``: ``RedisBeatStore``, leader lease, cursors and claims beside the queues;
- ``_keys``: the key layout (``QueueKeys``), shared by both;
- ``_scripts``: loads the Lua scripts of ``lua/`` (each sent with ``lua/common.lua`` in front).

Everything but the two classes is private to this package.
"""

from __future__ import annotations

from taskfleet.brokers.redis._beat import RedisBeatStore
from taskfleet.brokers.redis._broker import RedisBroker

__all__ = ["RedisBeatStore", "RedisBroker"]
