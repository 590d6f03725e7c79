"""The fleet store contract: what an app's workers and its clients share through the broker to see and steer the
fleet. Opaque bytes in, opaque bytes out (the records are ``taskfleet.fleet``'s); one namespace per app.

- **Registry.** ``heartbeat(worker_id, record, ttl_s)`` stores a worker's latest record with an expiry;
  ``workers()`` lists the live ones. A worker that stops heartbeating is gone after ``ttl_s`` by itself, with no
  one to clean up after it (``forget_worker`` removes one at once, on a clean stop).
- **Revocations.** ``add_revocations`` stores revoked task ids, each with its own expiry; ``revocations()`` lists
  the live ones, so a worker started later still honours them.
- **Control.** ``publish_control(request)`` reaches every worker listening in the namespace at that moment
  (``control_listener``; a request published before a listener opened is not delivered to it). A client opens a
  ``ReplyInbox`` first, names its ``address`` as the request's reply-to, and collects what workers send there with
  ``reply(address, ...)``.
- **Events.** ``emit_events`` appends to the namespace's event stream, which keeps the latest ``events_max_len``
  (older ones are dropped by the broker: never unbounded). ``read_events`` pages through it from a cursor and can
  block for new ones; ``events_end()`` is the cursor of "from now on".

Each broker implements it beside its broker, in its own natural way (``RedisFleetStore``: keys with TTLs, pub/sub,
a capped stream; ``RabbitMQFleetStore``: a fanout exchange, reply queues and capped stream queues;
``SQLiteFleetStore``: tables; ``StubFleetStore``: in-process). ``connect_fleet_store`` picks one by the broker's URL
scheme, from ``taskfleet._connections.schemes``. Not thread-safe: one thread uses a store (a listener or an inbox
belongs to the thread that opened it). Connection failures raise ``BrokerConnectionError``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Self

from taskfleet._connections import schemes
from taskfleet.brokers.base import Broker
from taskfleet.errors import ConfigurationError
from taskfleet.fleet.events import DEFAULT_EVENTS_MAX_LEN
from taskfleet.fleet.revocations import Revocation

__all__ = ["ControlListener", "FleetStore", "ReplyInbox", "connect_fleet_store"]


class ControlListener(ABC):
    """A worker's subscription to its namespace's control requests, open from its creation until ``close``."""

    @abstractmethod
    def receive(self, timeout_s: float) -> list[bytes]:
        """The requests published since the last call (oldest first), waiting up to ``timeout_s`` for one when there
        are none; ``[]`` on timeout."""

    @abstractmethod
    def close(self) -> None:
        """Stop listening and release what the subscription holds on the broker."""


class ReplyInbox(ABC):
    """Where the replies to a client's requests arrive: open it before publishing the request."""

    #: What a request names as its ``reply_to`` so that ``FleetStore.reply`` reaches this inbox.
    address: str

    @abstractmethod
    def collect(self, timeout_s: float, *, expected: int | None = None) -> list[bytes]:
        """The replies that arrive within ``timeout_s`` seconds, returning as soon as ``expected`` (if given) have
        arrived. Replies that came before the call are included."""

    @abstractmethod
    def close(self) -> None:
        """Release the inbox; replies sent to it afterwards are dropped by the broker."""


class FleetStore(ABC):
    """An app's fleet state on its broker (module docstring)."""

    namespace: str
    events_max_len: int

    @classmethod
    @abstractmethod
    def for_broker(cls, broker: Broker, *, namespace: str, events_max_len: int) -> Self:
        """A store on ``broker``'s server (what ``connect_fleet_store`` calls); a store with a connection of its own
        opens it from ``broker.settings``."""

    # -- registry --------------------------------------------------------------------------------------------------

    @abstractmethod
    def heartbeat(self, worker_id: str, record: bytes, *, ttl_s: float) -> None:
        """Store ``record`` as ``worker_id``'s latest, replacing the last one; it expires ``ttl_s`` from now."""

    @abstractmethod
    def forget_worker(self, worker_id: str) -> None:
        """Remove ``worker_id``'s record now (a worker's clean stop); no error when there is none."""

    @abstractmethod
    def workers(self) -> list[bytes]:
        """Every record that has not expired, one per worker id, in no particular order."""

    # -- revocations -----------------------------------------------------------------------------------------------

    @abstractmethod
    def add_revocations(self, revocations: Sequence[Revocation]) -> None:
        """Store these (a task id already stored is replaced); each is forgotten at its ``expires_at``."""

    @abstractmethod
    def revocations(self) -> list[Revocation]:
        """Every stored revocation that has not expired."""

    # -- control ---------------------------------------------------------------------------------------------------

    @abstractmethod
    def publish_control(self, request: bytes) -> None:
        """Deliver ``request`` to every listener open in this namespace now."""

    @abstractmethod
    def control_listener(self, worker_id: str) -> ControlListener:
        """Open a subscription for ``worker_id`` (a worker's control thread keeps one open while it runs)."""

    @abstractmethod
    def reply_inbox(self) -> ReplyInbox:
        """Open a new inbox for the replies to one request (or a few)."""

    @abstractmethod
    def reply(self, address: str, reply: bytes) -> None:
        """Send ``reply`` to the inbox at ``address``; dropped when that inbox is closed or gone."""

    # -- events ----------------------------------------------------------------------------------------------------

    @abstractmethod
    def emit_events(self, events: Sequence[bytes]) -> None:
        """Append ``events`` (in order, in as few round trips as the broker allows) to the event stream, which
        keeps the latest ``events_max_len``."""

    @abstractmethod
    def read_events(self, cursor: str | None, *, limit: int = 1000, timeout_s: float = 0.0) -> tuple[list[bytes], str]:
        """Up to ``limit`` events after ``cursor`` (None: from the oldest kept), oldest first, and the cursor to pass
        next; waits up to ``timeout_s`` for one when there are none. A cursor whose events were dropped reads on
        from the oldest kept."""

    @abstractmethod
    def events_end(self) -> str:
        """The cursor after the newest event: reading from it gives only events emitted later."""

    @abstractmethod
    def close(self) -> None:
        """Close connections; listeners and inboxes opened from this store must be closed first."""


def connect_fleet_store(broker: Broker, *, namespace: str,
                        events_max_len: int = DEFAULT_EVENTS_MAX_LEN) -> FleetStore:
    """The fleet store of the app ``namespace`` (its name) on ``broker``'s server."""
    if not namespace:
        raise ConfigurationError("a fleet store needs a namespace (the app's name)")
    if events_max_len < 1:
        raise ConfigurationError("events_max_len must be >= 1")
    return schemes.connect_fleet_store(broker, namespace=namespace, events_max_len=events_max_len)
