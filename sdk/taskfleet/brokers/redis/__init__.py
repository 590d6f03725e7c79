"""The Redis broker (``redis://``, ``rediss://``, ``unix://``), its beat store and its fleet store.

- ``_broker``: ``RedisBroker``, the hot paths packed ahead of time on ``taskfleet._connections.redis``;
- ``_beat``: ``RedisBeatStore``, leader lease, cursors and claims beside the queues;
- ``_fleet``: ``RedisFleetStore``, worker records, revocations, control, replies and events of an app;
- ``_wake``: ``RedisWakeFeed``, the queues' wake notices (``taskfleet.brokers.wake_feed``);
- ``_keys``: the key layout (``QueueKeys``, ``FleetKeys``), shared by all three;
- ``_scripts``: loads the Lua scripts of ``lua/`` (each sent with ``lua/common.lua`` in front).

Everything but the four classes is private to this package.
"""

from __future__ import annotations

from taskfleet.brokers.redis._beat import RedisBeatStore
from taskfleet.brokers.redis._broker import RedisBroker
from taskfleet.brokers.redis._fleet import RedisFleetStore
from taskfleet.brokers.redis._wake import RedisWakeFeed

__all__ = ["RedisBeatStore", "RedisBroker", "RedisFleetStore", "RedisWakeFeed"]
