"""``ConfirmWindow``: the single-message publishes (``delay``, ``apply_async``) that RabbitMQ has not confirmed yet,
in ``windowed`` publisher-confirm mode (``BrokerSettings.publish_confirms``).

A windowed publish is written out and returns; its confirm is read later, whenever the link's connection is pumped
(the next publish, after writing its own message; the I/O thread every ``PUMP_S``; ``flush``). Until then the
message is kept here, by its delivery tag on the current publisher channel, so that nothing is lost without a trace:

- ``basic.ack`` forgets it (``multiple`` every tag up to it); ``basic.nack``, or a ``basic.return`` before the ack
  (mandatory and unroutable), records it as a ``Refusal``, which the next publish after it or ``flush`` raises;
- a channel or connection lost before its confirm makes it an *orphan*: published again, first thing, on the next
  channel (at-least-once: RabbitMQ may have stored the first copy, so a duplicate is possible, a loss is not).

At most ``limit`` messages are outstanding: past it the publisher waits for confirms (bounded memory, and RabbitMQ's
flow control reaches the caller). Plain bookkeeping, no I/O: the publisher (``_publisher``) calls it, under the
link's I/O lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from taskfleet.brokers.rabbitmq._publisher import NACKED, RETURNED, Publish

__all__ = ["NACKED", "RETURNED", "ConfirmWindow", "Refusal"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A windowed publish RabbitMQ did not store: ``reason`` is ``RETURNED`` (no queue took it) or ``NACKED``."""

    message: Publish
    reason: str


class ConfirmWindow:
    """The unconfirmed windowed publishes of one link, across its channels and connections (see the module notes)."""

    __slots__ = ("_pending", "_returned", "limit", "orphans", "refusals")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a confirm window holds at least 1 message")
        self.limit = limit
        self._pending: dict[int, Publish] = {}  # delivery tag on the current channel -> message, tags ascending
        self._returned: set[int] = set()  # pending tags RabbitMQ sent back (their ack is a refusal)
        #: Written on a channel lost before their confirm: to publish again, in this order.
        self.orphans: list[Publish] = []
        #: Refused and not reported yet (``take_refusals``).
        self.refusals: list[Refusal] = []

    @property
    def outstanding(self) -> int:
        """Messages not confirmed yet: written and waiting, or orphaned and waiting to be written again."""
        return len(self._pending) + len(self.orphans)

    @property
    def full(self) -> bool:
        return self.outstanding >= self.limit

    def written(self, tag: int, message: Publish) -> None:
        """``message`` was written with delivery ``tag`` (tags only grow on a channel)."""
        self._pending[tag] = message

    def confirmed(self, tag: int, *, multiple: bool, ack: bool) -> None:
        """RabbitMQ answered for ``tag`` (and every earlier one when ``multiple``); tags not in the window (a
        batch's) are ignored."""
        if not multiple:
            message = self._pending.pop(tag, None)
            if message is not None:
                self._settle(tag, message, ack)
            return
        while self._pending:
            first = next(iter(self._pending))
            if first > tag:
                return
            self._settle(first, self._pending.pop(first), ack)

    def returned(self, exchange: str, routing_key: str, message_id: str | None) -> bool:
        """RabbitMQ sent back a message (``basic.return``, no tag): mark the earliest pending one that matches, whose
        ack follows. False when none does (it belongs to a batch)."""
        for tag, message in self._pending.items():
            if tag not in self._returned and (message.exchange, message.routing_key, message.message_id) == \
                    (exchange, routing_key, message_id):
                self._returned.add(tag)
                return True
        return False

    def channel_lost(self) -> None:
        """The channel of the pending tags is gone: their messages become orphans, ahead of older orphans' order
        kept (they were written after those were)."""
        if self._pending:
            self.orphans.extend(self._pending.values())
            self._pending.clear()
            self._returned.clear()

    def take_orphans(self) -> list[Publish]:
        """The orphans, to write again (each is ``written`` again with its new tag)."""
        orphans, self.orphans = self.orphans, []
        return orphans

    def take_refusals(self) -> list[Refusal]:
        refusals, self.refusals = self.refusals, []
        return refusals

    def _settle(self, tag: int, message: Publish, ack: bool) -> None:
        if not ack:
            self.refusals.append(Refusal(message, NACKED))
        elif tag in self._returned:
            self.refusals.append(Refusal(message, RETURNED))
        self._returned.discard(tag)


def describe(refusals: Sequence[Refusal], *, limit: int = 5) -> str:
    """The refused messages for an error message: how many, why, and the first ``limit`` message ids."""
    ids = ", ".join(str(r.message.message_id) for r in refusals[:limit])
    more = f" and {len(refusals) - limit} more" if len(refusals) > limit else ""
    returned = sum(1 for r in refusals if r.reason == RETURNED)
    why = []
    if returned:
        why.append(f"{returned} unroutable (queue deleted?)")
    if len(refusals) - returned:
        why.append(f"{len(refusals) - returned} refused to store (nack)")
    return f"{len(refusals)} published message(s) were not stored ({', '.join(why)}): {ids}{more}"
