"""The beat store on RabbitMQ: the lease is a single-active-consumer queue holding a token, the cursors are the
last message of a state queue, and a fire is an AMQP transaction on the leader's own channel.

- **Lease.** Every replica consumes ``taskfleet.beat.<N>.leader`` (``x-single-active-consumer``, prefetch 1) and
  publishes a token into it when it does not lead. RabbitMQ delivers only to the one active consumer, which keeps
  the token unacked: holding it is leading. When the leader's connection dies (a killed process closes its socket
  at once; a frozen or cut-off one misses heartbeats, sent every ``lease_s``), RabbitMQ gives the token to the next
  consumer.
- **Cursors.** ``taskfleet.beat.<N>.state`` (``x-max-length: 1``) keeps the latest JSON map entry -> Unix ms. A new
  leader reads it once; only the leader writes it.
- **Fire.** The leader publishes the task message and the new state in one transaction on the channel that holds
  its consumer. While that channel is open no other consumer is active, and once the server has closed it the
  commit fails: a replica that lost the lease cannot send a tick. Limits (documented in docs/beat.md): RabbitMQ
  transactions are atomic per queue, so a broker crash in the middle of a commit may keep the message without the
  cursor (that tick is sent again after the restart) or the cursor without the message (that tick is lost).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Self
from urllib.parse import urlsplit

import pika

from taskfleet.brokers.base import Broker
from taskfleet.brokers.beat_store import BeatStore, Tick
from taskfleet.brokers.rabbitmq import _topology as topo
from taskfleet.brokers.rabbitmq._link import AmqpLink, Channels
from taskfleet.settings import BrokerSettings

PERSISTENT = 2
TOKEN = b"taskfleet-beat-leader"


def leader_queue_name(namespace: str) -> str:
    return f"{topo.PREFIX}beat.{namespace}.leader"


def state_queue_name(namespace: str) -> str:
    return f"{topo.PREFIX}beat.{namespace}.state"


class RabbitMQBeatStore(BeatStore):
    """A ``BeatStore`` on the RabbitMQ node of ``settings.url`` (its own connection, heartbeat every ``lease_s``)."""

    @classmethod
    def for_broker(cls, broker: Broker, *, namespace: str, holder: str, lease_s: float, claim_ttl_s: float) -> Self:
        """A store with its own connection to ``broker``'s server (``BeatStore.for_broker``; claims are kept with
        the fire, so ``claim_ttl_s`` is not needed)."""
        return cls(broker.settings, namespace=namespace, holder=holder, lease_s=lease_s)

    def __init__(self, settings: BrokerSettings, *, namespace: str, holder: str, lease_s: float) -> None:
        self.holder = holder
        self.lease_s = lease_s
        url = settings.url
        if "heartbeat=" not in urlsplit(url).query:
            url += ("&" if urlsplit(url).query else "?") + f"heartbeat={max(1, int(lease_s))}"
        self._link = AmqpLink(url, socket_timeout_s=settings.socket_timeout_s, name=f"taskfleet-beat {holder}")
        self._leader_queue = leader_queue_name(namespace)
        self._state_queue = state_queue_name(namespace)
        self._consuming = 0  # generation whose channel consumes the leader queue
        self._token: tuple[int, int] | None = None  # (generation, delivery tag) of the token we hold
        self._cursors: dict[str, int] | None = None  # loaded when this replica becomes leader

    # -- lease ----------------------------------------------------------------------------------------------------

    def hold_lease(self) -> bool:
        return self._link.call(self._hold, action="hold the beat lease")

    def _hold(self, ch: Channels) -> bool:
        if self._consuming != ch.generation:
            self._token, self._cursors = None, None
            ch.admin.queue_declare(self._leader_queue, durable=True, arguments={
                "x-single-active-consumer": True, "x-max-length": 1, "x-overflow": "reject-publish"})
            ch.admin.queue_declare(self._state_queue, durable=True, arguments={"x-max-length": 1})
            ch.consume.basic_qos(prefetch_count=1)
            ch.consume.tx_select()
            ch.consume.basic_consume(self._leader_queue, on_message_callback=self._on_token)
            self._consuming = ch.generation
        if not self._leads(ch):
            # A spare token is harmless (only the active consumer gets one) and the queue keeps at most one ready.
            ch.admin.basic_publish("", self._leader_queue, TOKEN, pika.BasicProperties(delivery_mode=PERSISTENT))
            ch.connection.process_data_events(0)
        if self._leads(ch) and self._cursors is None:
            self._cursors = self._read_state(ch)
        return self._leads(ch)

    def _on_token(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        if self._token is None or self._token[0] != self._link.generation:
            self._token = (self._link.generation, method.delivery_tag)
        else:  # a second token while leading: give it back
            channel.basic_reject(method.delivery_tag, requeue=True)

    def _leads(self, ch: Channels) -> bool:
        return self._token is not None and self._token[0] == ch.generation and ch.consume.is_open

    def release_lease(self) -> None:
        self._link.call(self._release, action="release the beat lease")

    def _release(self, ch: Channels) -> None:
        if self._leads(ch) and self._token is not None:
            ch.consume.basic_reject(self._token[1], requeue=True)
            ch.consume.tx_commit()
        self._token = None

    # -- cursors --------------------------------------------------------------------------------------------------

    def _read_state(self, ch: Channels) -> dict[str, int]:
        method, _, body = ch.admin.basic_get(self._state_queue, auto_ack=False)
        if method is None:
            return {}
        ch.admin.basic_reject(method.delivery_tag, requeue=True)
        try:
            raw = json.loads(body)
            return {str(k): int(v) for k, v in raw.get("cursors", {}).items()}
        except (ValueError, TypeError, AttributeError):
            return {}

    def cursors(self, entries: Sequence[str]) -> dict[str, int | None]:
        """The cursors as this replica knows them: read from the broker when it became leader; all None while it
        does not lead (only the leader reads the state queue, so a reader never hides it from a new leader)."""
        known = self._cursors or {}
        return {entry: known.get(entry) for entry in entries}

    def start_cursor(self, entry: str, at_ms: int) -> int:
        return int(self._link.call(lambda ch: self._start(ch, entry, at_ms), action="start a beat cursor"))

    def _start(self, ch: Channels, entry: str, at_ms: int) -> int:
        if not self._leads(ch) or self._cursors is None:
            return at_ms
        if entry not in self._cursors:
            self._commit(ch, {**self._cursors, entry: at_ms}, message=None)
        return self._cursors[entry]

    def fire(self, tick: Tick) -> bool:
        return bool(self._link.call(lambda ch: self._fire(ch, tick), action="fire a beat tick"))

    def _fire(self, ch: Channels, tick: Tick) -> bool:
        if not self._leads(ch) or self._cursors is None:
            return False
        if self._cursors.get(tick.entry, -1) >= tick.scheduled_ms:
            return False
        topo.declare_task_queue(ch.admin, tick.message.queue, ladder_ready=False)
        self._commit(ch, {**self._cursors, tick.entry: tick.scheduled_ms}, message=tick)
        return True

    def skip(self, entry: str, scheduled_ms: int) -> None:
        self._link.call(lambda ch: self._skip(ch, entry, scheduled_ms), action="skip a beat tick")

    def _skip(self, ch: Channels, entry: str, scheduled_ms: int) -> None:
        if self._leads(ch) and self._cursors is not None and self._cursors.get(entry, -1) < scheduled_ms:
            self._commit(ch, {**self._cursors, entry: scheduled_ms}, message=None)

    def _commit(self, ch: Channels, cursors: dict[str, int], *, message: Tick | None) -> None:
        """Publish ``message`` (if any) and the new state in one transaction on the leader's consumer channel."""
        if message is not None:
            m = message.message
            ch.consume.basic_publish("", m.queue, m.data, pika.BasicProperties(
                delivery_mode=PERSISTENT, message_id=m.message_id, priority=m.priority))
        ch.consume.basic_publish("", self._state_queue, json.dumps({"cursors": cursors}).encode(),
                                 pika.BasicProperties(delivery_mode=PERSISTENT))
        ch.consume.tx_commit()
        self._cursors = cursors

    def close(self) -> None:
        self._link.close()
