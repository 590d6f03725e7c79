"""The stub broker, beat store and fleet store (``memory://``): the whole contract in this process's memory, no
server, for unit tests. The in-process result backend is ``taskfleet.backends.stub.StubBackend``.

- ``_broker``: ``StubBroker``;
- ``_beat``: ``StubBeatStore`` (``reset_beat_state`` forgets every namespace's state, between tests);
- ``_fleet``: ``StubFleetStore`` (``reset_fleet_state`` likewise).
"""

from __future__ import annotations

from taskfleet.brokers.stub._beat import StubBeatStore, reset_beat_state
from taskfleet.brokers.stub._broker import StubBroker
from taskfleet.brokers.stub._fleet import StubFleetStore, reset_fleet_state

__all__ = ["StubBeatStore", "StubBroker", "StubFleetStore", "reset_beat_state", "reset_fleet_state"]
