"""The stub broker and beat store (``memory://``): the whole contract in this process's memory, no server, for unit
tests. The in-process result backend is ``taskfleet.backends.stub.StubBackend``.

- ``_broker``: ``StubBroker``;
- ``_beat``: ``StubBeatStore`` (``reset_beat_state`` forgets every namespace's state, between tests).
"""

from __future__ import annotations

from taskfleet.brokers.stub._beat import StubBeatStore, reset_beat_state
from taskfleet.brokers.stub._broker import StubBroker

__all__ = ["StubBeatStore", "StubBroker", "reset_beat_state"]
