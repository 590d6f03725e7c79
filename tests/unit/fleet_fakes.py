"""A fleet store that records what is emitted to it (and can be told to fail), for unit specifications."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

from taskfleet.brokers.base import Broker
from taskfleet.brokers.fleet_store import ControlListener, FleetStore, ReplyInbox
from taskfleet.errors import BrokerConnectionError
from taskfleet.fleet.events import FleetEvent
from taskfleet.fleet.revocations import Revocation


class RecordingStore(FleetStore):
    """Counts ``emit_events`` calls and keeps their events; ``fail`` makes the next calls raise."""

    def __init__(self, *, fail: bool = False) -> None:
        self.namespace = "tests"
        self.events_max_len = 100
        self.calls: list[list[bytes]] = []
        self.fail = fail
        self.closed = False

    @classmethod
    def for_broker(cls, broker: Broker, *, namespace: str, events_max_len: int) -> Self:
        return cls()

    @property
    def events(self) -> list[FleetEvent]:
        return [FleetEvent.from_json(raw) for call in self.calls for raw in call]

    @property
    def types(self) -> list[str]:
        return [event.type for event in self.events]

    def emit_events(self, events: Sequence[bytes]) -> None:
        if self.fail:
            raise BrokerConnectionError("broker down")
        self.calls.append(list(events))

    def read_events(self, cursor: str | None, *, limit: int = 1000, timeout_s: float = 0.0) -> tuple[list[bytes], str]:
        flat = [raw for call in self.calls for raw in call]
        start = int(cursor or 0)
        return flat[start:start + limit], str(min(len(flat), start + limit))

    def events_end(self) -> str:
        return str(sum(len(call) for call in self.calls))

    def close(self) -> None:
        self.closed = True

    def heartbeat(self, worker_id: str, record: bytes, *, ttl_s: float) -> None:
        raise NotImplementedError

    def forget_worker(self, worker_id: str) -> None:
        raise NotImplementedError

    def workers(self) -> list[bytes]:
        raise NotImplementedError

    def add_revocations(self, revocations: Sequence[Revocation]) -> None:
        raise NotImplementedError

    def revocations(self) -> list[Revocation]:
        raise NotImplementedError

    def publish_control(self, request: bytes) -> None:
        raise NotImplementedError

    def control_listener(self, worker_id: str) -> ControlListener:
        raise NotImplementedError

    def reply_inbox(self) -> ReplyInbox:
        raise NotImplementedError

    def reply(self, address: str, reply: bytes) -> None:
        raise NotImplementedError
