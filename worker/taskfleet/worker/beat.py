"""Beat: sends periodic tasks on their schedule, exactly once per tick across any number of replicas.

Beat only enqueues; workers run the tasks. Every replica runs the same loop; the one holding the leader lease (a
``BeatStore`` in the broker) sends, the others wait to take over. For each entry the leader plans the ticks due
since the entry's stored cursor (``plan``, pure), applies the entry's catch-up policy, and sends each tick through
``BeatStore.fire``, which claims the tick, moves the cursor and enqueues the message in one fenced step.

Tick message ids are ``tick_id(entry, scheduled time)``: the same tick always gets the same id, so a duplicate
would be recognisable (and the worker's result check skips a redelivered tick that already ran).
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from taskfleet.app import App
from taskfleet.brokers.base import Outgoing
from taskfleet.brokers.beat_store import DEFAULT_CLAIM_TTL_S, DEFAULT_LEASE_S, BeatStore, Tick, connect_beat_store
from taskfleet.errors import ConfigurationError, TaskfleetError
from taskfleet.message import Message
from taskfleet.periodic import DEFAULT_GRACE_S, MAX_CATCH_UP, PeriodicEntry
from taskfleet.producer import Producer
from taskfleet.schedules import Every, next_run
from taskfleet.worker.logging import get_logger
from taskfleet.worker.metrics import BeatMetrics

log = get_logger("taskfleet.beat")

#: How often a replica that does not lead asks for the lease: bounds the takeover time beyond the lease itself.
DEFAULT_STANDBY_POLL_S = 0.5
#: Longest the loop sleeps (it wakes earlier for a due tick or a lease renewal).
DEFAULT_MAX_SLEEP_S = 0.5
#: After a broker error, wait this long before trying again.
DEFAULT_ERROR_BACKOFF_S = 1.0
#: Header of every tick message: which entry sent it and the tick's scheduled time (ISO 8601, UTC).
ENTRY_HEADER = "taskfleet-beat-entry"
SCHEDULED_HEADER = "taskfleet-beat-scheduled"
_TICK_NAMESPACE = uuid.UUID("6f1d3c2e-2b0e-4f7a-9d8e-1f6c5b4a3e21")


@dataclass(frozen=True, kw_only=True)
class BeatSettings:
    """How one beat replica runs. Times in seconds."""

    lease_s: float = DEFAULT_LEASE_S  # a dead leader's ticks wait at most about this long for a takeover
    claim_ttl_s: float = DEFAULT_CLAIM_TTL_S  # how long a tick's idempotency key is kept
    grace_s: float = DEFAULT_GRACE_S  # a tick this late still counts as on time (catch_up="none")
    standby_poll_s: float = DEFAULT_STANDBY_POLL_S
    max_sleep_s: float = DEFAULT_MAX_SLEEP_S
    error_backoff_s: float = DEFAULT_ERROR_BACKOFF_S

    def __post_init__(self) -> None:
        if self.lease_s < 1:
            raise ConfigurationError("the beat lease must be >= 1 second")
        if self.standby_poll_s <= 0 or self.max_sleep_s <= 0 or self.grace_s < 0:
            raise ConfigurationError("beat poll, sleep and grace times must be positive")

    @property
    def renew_every_s(self) -> float:
        """The leader renews its lease three times per lease, so one lost renewal never costs the lease."""
        return self.lease_s / 3


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do for one entry now: move the cursor to ``skip_to`` (missed ticks dropped), then send ``fire``."""

    fire: tuple[int, ...] = ()
    skip_to: int | None = None


def tick_id(entry: str, scheduled_ms: int) -> str:
    """The task id of ``entry``'s tick at ``scheduled_ms``: the same on every replica, different per tick."""
    return uuid.uuid5(_TICK_NAMESPACE, f"{entry}\x00{scheduled_ms}").hex


def to_ms(when: datetime) -> int:
    return round(when.timestamp() * 1000)


def due_ticks(entry: PeriodicEntry, cursor_ms: int, now_ms: int, tz: tzinfo, *,
              limit: int = MAX_CATCH_UP) -> tuple[list[int], int | None]:
    """The last ``limit`` ticks of ``entry`` in (cursor, now], and the newest older one that did not fit (None when
    all fit)."""
    schedule = entry.schedule
    if isinstance(schedule, Every):  # no need to walk a day of 1-second ticks
        step = round(schedule.seconds * 1000)
        last = now_ms // step * step
        first = (cursor_ms // step + 1) * step
        if last < first:
            return [], None
        start = max(first, last - (limit - 1) * step)
        return list(range(start, last + 1, step)), (start - step if start > first else None)
    kept: deque[int] = deque(maxlen=limit)
    dropped: int | None = None
    after = datetime.fromtimestamp(cursor_ms / 1000, UTC)
    while True:
        after = next_run(schedule, after, tz)
        at = to_ms(after)
        if at > now_ms:
            return list(kept), dropped
        if len(kept) == limit:
            dropped = kept[0]
        kept.append(at)


def plan(entry: PeriodicEntry, cursor_ms: int, now_ms: int, tz: tzinfo, *, grace_ms: int) -> Plan:
    """Pure: the ticks of ``entry`` to send now, given its cursor, under its catch-up policy (see
    ``taskfleet.periodic``). A tick at most ``grace_ms`` old is on time; older ones are missed."""
    due, dropped = due_ticks(entry, cursor_ms, now_ms, tz)
    if not due:
        return Plan()
    if entry.catch_up == "all":
        return Plan(fire=tuple(due), skip_to=dropped)
    if entry.catch_up == "last":
        return Plan(fire=(due[-1],))
    on_time = tuple(t for t in due if now_ms - t <= grace_ms)
    missed = [t for t in due if now_ms - t > grace_ms]
    return Plan(fire=on_time, skip_to=missed[-1] if missed else dropped)


class Beat:
    """One beat replica: ``run(stop)`` loops until ``stop`` is set; ``step()`` is one pass (for tests)."""

    def __init__(self, app: App, store: BeatStore, settings: BeatSettings, metrics: BeatMetrics, *,
                 entries: Sequence[PeriodicEntry] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.app = app
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.entries = list(app.periodic_tasks.values() if entries is None else entries)
        self.tz = app.tzinfo
        self.leading = False
        self.last_loop = time.monotonic()
        self.healthy = True
        self._clock = clock
        self._cursors: dict[str, int] = {}
        self._lease_checked = -math.inf

    # -- the loop --------------------------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set, then give up the lease so another replica takes over at once."""
        log.info("beat starting", holder=self.store.holder, entries=[e.name for e in self.entries],
                 lease_s=self.settings.lease_s, timezone=self.app.timezone)
        while not stop.is_set():
            stop.wait(self.step())
        if self.leading:
            try:
                self.store.release_lease()
            except TaskfleetError as exc:
                log.warning("beat could not release its lease; it expires by itself", error=str(exc))
        self._set_leading(False)
        log.info("beat stopped", holder=self.store.holder)

    def step(self) -> float:
        """One pass: keep or seek the lease, send what is due. Returns how long to sleep (seconds)."""
        self.last_loop = time.monotonic()
        try:
            now = self._clock()
            self._check_lease(now)
            if not self.leading:
                self.healthy = True
                return self.settings.standby_poll_s
            self._send_due()
            self.healthy = True
            return self._sleep_s(self._clock())
        except TaskfleetError as exc:
            self.healthy = False
            log.warning("beat step failed; it will retry", error=str(exc), leading=self.leading)
            self._set_leading(False)  # the next pass asks the broker again before sending anything
            self._lease_checked = -math.inf
            return self.settings.error_backoff_s

    def _check_lease(self, now: float) -> None:
        if self.leading and now - self._lease_checked < self.settings.renew_every_s:
            return
        leading = self.store.hold_lease()
        self._lease_checked = now
        if leading and not self.leading:
            self._load_cursors(now)
        self._set_leading(leading)

    def _set_leading(self, leading: bool) -> None:
        if leading != self.leading:
            log.info("beat leads" if leading else "beat no longer leads", holder=self.store.holder)
        self.leading = leading
        self.metrics.set_leader(leading)

    def _load_cursors(self, now: float) -> None:
        """Read the cursors; an entry without one starts now (its earlier ticks are not "missed")."""
        stored = self.store.cursors([e.name for e in self.entries])
        now_ms = round(now * 1000)
        self._cursors = {name: cursor if cursor is not None else self.store.start_cursor(name, now_ms)
                         for name, cursor in stored.items()}

    def _send_due(self) -> None:
        """Plan and send each entry in turn. Each entry reads the clock afresh, and under ``catch_up="none"`` each
        tick is checked again as it is sent: a long catch-up of another entry, or a slow broker call, can make a tick
        that was on time when planned later than the grace."""
        grace_ms = round(self.settings.grace_s * 1000)
        for entry in self.entries:
            now_ms = round(self._clock() * 1000)
            todo = plan(entry, self._cursors[entry.name], now_ms, self.tz, grace_ms=grace_ms)
            if todo.skip_to is not None:
                self._skip(entry, todo.skip_to)
            for scheduled_ms in todo.fire:
                now = self._clock()
                if entry.catch_up == "none" and round(now * 1000) - scheduled_ms > grace_ms:
                    self._skip(entry, scheduled_ms)
                    continue
                if not self._fire(entry, scheduled_ms, now):
                    # Someone else sent it, or the lease is gone: ask the broker before doing anything else.
                    self._lease_checked = -math.inf
                    self._set_leading(self.store.hold_lease())
                    if self.leading:
                        self._load_cursors(self._clock())
                    return
                self._cursors[entry.name] = scheduled_ms

    def _skip(self, entry: PeriodicEntry, up_to_ms: int) -> None:
        self.store.skip(entry.name, up_to_ms)
        log.warning("beat skipped missed ticks", entry=entry.name, catch_up=entry.catch_up, up_to=_iso(up_to_ms))
        self.metrics.skipped(entry.name)
        self._cursors[entry.name] = up_to_ms

    def _fire(self, entry: PeriodicEntry, scheduled_ms: int, now: float) -> bool:
        """Send the tick ``scheduled_ms`` of ``entry`` as a message created ``now``."""
        task_id = tick_id(entry.name, scheduled_ms)
        message = self._message(entry, scheduled_ms, task_id, now)
        # Not size-checked: a tick too large is dead-lettered by its worker, and never stops beat's other entries.
        data = Producer(self.app).encode(message, check_size=False)
        sent = self.store.fire(Tick(entry.name, scheduled_ms, Outgoing(message.queue, message.broker_id, data,
                                                                       message.priority)))
        lateness_s = max(0.0, self._clock() - scheduled_ms / 1000)
        if sent:
            self.metrics.fired(entry.name, lateness_s)
            log.info("beat fired", entry=entry.name, task=entry.signature.task, scheduled=_iso(scheduled_ms),
                     task_id=task_id, lateness_s=round(lateness_s, 4), queue=message.queue)
        else:
            log.info("beat tick already sent or lease lost", entry=entry.name, scheduled=_iso(scheduled_ms))
        return sent

    def _message(self, entry: PeriodicEntry, scheduled_ms: int, task_id: str, now: float) -> Message:
        """The tick's message, routed as ``apply_async`` routes (the entry's options, the app's ``task_routes``,
        the task's, the app's)."""
        sig = entry.signature
        return Producer(self.app).message(
            sig.task, sig.args, sig.kwargs, countdown=None, eta=None, expires=sig.expiry(self.app),
            priority=sig.priority, queue=sig.queue, task_id=task_id,
            headers={ENTRY_HEADER: entry.name, SCHEDULED_HEADER: _iso(scheduled_ms)}, now=now,
            serializer=sig.serializer, compression=sig.compression)

    def _sleep_s(self, now: float) -> float:
        """Until the next tick of any entry or the next renewal, at most ``max_sleep_s``."""
        wake = min(self._lease_checked + self.settings.renew_every_s, now + self.settings.max_sleep_s)
        for entry in self.entries:
            after = datetime.fromtimestamp(max(self._cursors[entry.name] / 1000, now), UTC)
            wake = min(wake, next_run(entry.schedule, after, self.tz).timestamp())
        return max(0.0, wake - now)

    # -- health ----------------------------------------------------------------------------------------------------

    def liveness(self) -> tuple[bool, str]:
        """Alive while the loop keeps turning (a stuck loop would hold the lease and send nothing)."""
        idle_s = time.monotonic() - self.last_loop
        limit_s = max(30.0, 2 * self.settings.lease_s)
        if idle_s > limit_s:
            return False, f"beat loop stalled for {idle_s:.0f}s"
        return True, "ok: leading" if self.leading else "ok: standby"

    def readiness(self) -> tuple[bool, str]:
        """Ready while the last pass reached the broker."""
        return (True, "ok") if self.healthy else (False, "beat cannot reach the broker")


def holder_name() -> str:
    """This replica's name in the lease: host (the pod name on Kubernetes), pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def open_beat(app: App, settings: BeatSettings, metrics: BeatMetrics) -> Beat:
    """A beat replica for ``app`` with its own store connection on the app's broker (namespace: the app name)."""
    store = connect_beat_store(app.broker, namespace=app.name, holder=holder_name(), lease_s=settings.lease_s,
                               claim_ttl_s=settings.claim_ttl_s)
    return Beat(app, store, settings, metrics)


class BeatThread:
    """Beat on a daemon thread of another process (``taskfleet worker --beat``)."""

    def __init__(self, beat: Beat) -> None:
        self.beat = beat
        self.stop_event = threading.Event()
        self._thread = threading.Thread(target=beat.run, args=(self.stop_event,), name="taskfleet-beat",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the loop, hand the lease over and close the store."""
        self.stop_event.set()
        self._thread.join(timeout_s)
        self.beat.store.close()


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()
