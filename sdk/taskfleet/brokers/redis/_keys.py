"""The Redis broker's key layout, shared by the broker and its beat store.

Per queue ``Q`` the keys share the ``{Q}`` hash tag, so a queue lives in one cluster slot: ``tf:{Q}:ready``,
``inflight``, ``delayed``, ``msg``, ``rank``, ``dlv``, ``seq``, ``signal`` and ``dead`` (what each holds:
``lua/common.lua``), plus ``tf:queues``, the set of every queue name. ``QueueKeys`` names them; each script's
``KEYS`` are built by the method named after it, in the order the script's header comment lists them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from taskfleet.settings import validate_queue_name

PREFIX = "tf:"
#: The set of every queue a message was enqueued to (``Broker.queues``).
QUEUES_KEY = PREFIX + "queues"


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The keys of one queue, by name."""

    ready: str  # ZSET id -> rank
    inflight: str  # ZSET id -> lease deadline (ms)
    delayed: str  # ZSET id -> due time (ms)
    msg: str  # HASH id -> bytes
    rank: str  # HASH id -> rank
    dlv: str  # HASH id -> delivery count
    seq: str  # counter
    signal: str  # LIST of wake-up tokens
    dead: str  # LIST of JSON dead-letter records

    @classmethod
    def of(cls, queue: str) -> QueueKeys:
        """The keys of ``queue`` (an invalid queue name is a ``ConfigurationError``)."""
        validate_queue_name(queue)  # also guarantees no '{' or '}' that would break the hash tag
        return cls(*(f"{PREFIX}{{{queue}}}:{field.name}" for field in fields(cls)))

    @property
    def wake_channel(self) -> str:
        """The pub/sub channel (not a key) on which ``enqueue.lua`` publishes the queue's name when it makes an empty
        ready set non-empty: ``tf:{Q}:wake`` (``wake_channel`` in ``lua/common.lua``)."""
        return self.ready.removesuffix("ready") + "wake"

    def all(self) -> list[str]:
        """Every key of the queue in layout order: ``fetch.lua``'s keys per queue (``FETCH_KEYS_PER_QUEUE``)."""
        return [self.ready, self.inflight, self.delayed, self.msg, self.rank, self.dlv, self.seq, self.signal,
                self.dead]

    def for_enqueue(self) -> list[str]:
        """``enqueue.lua``: ready, inflight, delayed, msg, rank, dlv, seq, signal, tf:queues."""
        return [self.ready, self.inflight, self.delayed, self.msg, self.rank, self.dlv, self.seq, self.signal,
                QUEUES_KEY]

    def for_settle(self) -> list[str]:
        """``settle.lua``: ready, inflight, msg, rank, dlv, signal."""
        return [self.ready, self.inflight, self.msg, self.rank, self.dlv, self.signal]

    def for_dead_letter(self) -> list[str]:
        """``dead_letter.lua``: inflight, msg, rank, dlv, dead."""
        return [self.inflight, self.msg, self.rank, self.dlv, self.dead]

    def for_depth(self) -> list[str]:
        """``depth.lua``: ready, inflight, delayed, dead."""
        return [self.ready, self.inflight, self.delayed, self.dead]

    def for_purge(self) -> list[str]:
        """``purge.lua``: ready, inflight, delayed, msg, rank, dlv, signal."""
        return [self.ready, self.inflight, self.delayed, self.msg, self.rank, self.dlv, self.signal]

    def for_requeue_dead(self) -> list[str]:
        """``requeue_dead.lua``: ready, inflight, delayed, msg, rank, dlv, seq, signal, dead, tf:queues."""
        return [*self.all(), QUEUES_KEY]


#: How many keys ``fetch.lua`` takes per queue (its ``K``).
FETCH_KEYS_PER_QUEUE = len(fields(QueueKeys))


FLEET_PREFIX = PREFIX + "fleet:"


@dataclass(frozen=True, slots=True)
class FleetKeys:
    """The fleet store's keys of one namespace (an app), all sharing the ``{namespace}`` hash tag, plus the
    prefixes of its per-worker and per-inbox keys (``worker`` and ``inbox`` methods)."""

    workers: str  # ZSET worker id -> expiry (server ms): the index ``workers()`` reads, pruned on read
    revoked: str  # ZSET task id -> expiry (ms)
    revocations: str  # HASH task id -> Revocation JSON
    control: str  # pub/sub channel of control requests
    events: str  # STREAM of events: per entry ``n`` (how many) and ``e`` (newline-joined, ``event_entries``)
    base: str

    @classmethod
    def of(cls, namespace: str) -> FleetKeys:
        base = f"{FLEET_PREFIX}{{{namespace}}}:"
        return cls(base + "workers", base + "revoked", base + "revocations", base + "control", base + "events", base)

    def worker(self, worker_id: str) -> str:
        """STRING: the worker's latest record, with a TTL (``SET PX``)."""
        return f"{self.base}worker:{worker_id}"

    def inbox(self, address: str) -> str:
        """LIST: the replies sent to one inbox."""
        return f"{self.base}inbox:{address}"

    def inbox_open(self, address: str) -> str:
        """STRING with a TTL: present while the inbox is open (a reply to a closed inbox is dropped)."""
        return f"{self.base}inbox:{address}:open"

    @property
    def events_count(self) -> str:
        """STRING: how many events the events stream holds (``lua/fleet_emit.lua`` trims by it)."""
        return self.events + ":count"
