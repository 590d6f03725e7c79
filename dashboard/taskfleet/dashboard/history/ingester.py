"""``Ingester``: the thread that keeps the history current. It reads the app's event stream from the cursor saved with
the last batch, in pages, and applies each page with its cursor in one transaction (so a restart continues exactly
where it stopped); every ``sample_interval_s`` it records the queues' depths and, on Kubernetes, each TaskQueue's
replicas; every ``prune_interval_s`` it prunes. A malformed event is logged and skipped; a broker or file error is
logged and retried with backoff: the ingester stops only when told to.

It uses its broker and fleet store from its own thread only (neither is shared with the web app's threads).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from taskfleet.app import App
from taskfleet.brokers.base import Broker
from taskfleet.brokers.fleet_store import FleetStore, connect_fleet_store
from taskfleet.dashboard import model
from taskfleet.dashboard.history.settings import HistorySettings
from taskfleet.dashboard.history.store import HistoryError, HistoryStore
from taskfleet.errors import TaskfleetError

log = logging.getLogger(__name__)

#: Events read per page (one transaction each).
PAGE_SIZE = 1000
#: Seconds one read waits for new events when the stream is quiet.
READ_WAIT_S = 0.5
#: Seconds of the first wait after an error, doubled per error in a row up to ``MAX_BACKOFF_S``.
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
#: Seconds between two warnings about malformed events.
_WARN_EVERY_S = 30.0


def decode_events(raw: list[bytes]) -> list[Mapping[str, Any]]:
    """The events of a page, decoded; those that are not a JSON object are logged and skipped."""
    events: list[Mapping[str, Any]] = []
    for item in raw:
        try:
            event = json.loads(item)
        except (ValueError, UnicodeDecodeError):
            event = None
        if isinstance(event, dict):
            events.append(event)
        else:
            log.warning("history: skipping an event that is not a JSON object: %r", item[:200])
    return events


def scale_sample(view: model.TaskQueueView, at: float) -> model.ScaleSample:
    """A TaskQueue's replicas now, with the reason of its last condition (the operator's latest word)."""
    reason = None
    if view.conditions:
        last = view.conditions[-1]
        reason = last.get("reason") or last.get("message") or None
    return model.ScaleSample(at=at, namespace=view.namespace, name=view.name, replicas=view.replicas,
                             desired=view.desired, reason=reason)


class Ingester:
    """Fills ``store`` from ``app``'s event stream (on ``broker``) and samples its queues; ``start()``, then
    ``stop()``. ``kube``: where TaskQueues' replicas come from (None off Kubernetes). ``clock``: Unix seconds."""

    def __init__(self, app: App, broker: Broker, store: HistoryStore, settings: HistorySettings, *,
                 kube: model.KubeSource | None = None, clock: Callable[[], float] = time.time) -> None:
        self._app, self._broker, self._store, self._settings = app, broker, store, settings
        self._kube, self._clock = kube, clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fleet: FleetStore | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the ingester is started already")
        self._thread = threading.Thread(target=self._run, name="taskfleet-history-ingester", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Ask the thread to stop and wait up to ``timeout`` seconds; whether it stopped (its last batch is
        committed, or not started)."""
        self._stop.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        next_sample = next_prune = 0.0
        backoff = FIRST_BACKOFF_S
        cursor: str | None = None
        loaded = False
        try:
            while not self._stop.is_set():
                try:
                    if not loaded:
                        cursor, loaded = self._store.load_cursor(), True
                    cursor = self.ingest_page(cursor)
                    backoff = FIRST_BACKOFF_S
                except Exception as exc:  # broker, file or a bug: logged, retried, never fatal
                    log.warning("history: reading events failed (%s); again in %.1f s", exc, backoff,
                                exc_info=not isinstance(exc, (TaskfleetError, OSError)))
                    self._close_fleet()
                    self._stop.wait(backoff)
                    backoff = min(MAX_BACKOFF_S, backoff * 2)
                now = self._clock()
                if now >= next_sample:
                    next_sample = now + self._settings.sample_interval_s
                    self.sample(now)
                if now >= next_prune:
                    next_prune = now + self._settings.prune_interval_s
                    self._prune(now)
        finally:
            self._close_fleet()

    def ingest_page(self, cursor: str | None) -> str | None:
        """Read one page after ``cursor`` (waiting a little when there is none) and apply it with its cursor; the
        cursor to read from next."""
        if self._fleet is None:
            self._fleet = connect_fleet_store(self._broker, namespace=self._app.name,
                                              events_max_len=self._app.settings.events_max_len)
        raw, after = self._fleet.read_events(cursor, limit=PAGE_SIZE, timeout_s=READ_WAIT_S)
        if not raw and after == cursor:
            return cursor
        events = decode_events(raw)
        try:
            self._store.apply_events(events, cursor=after)
        except HistoryError:
            raise
        except Exception:  # an event the fold cannot take must not stop the history
            log.exception("history: a batch of %d events failed; applying them one by one", len(events))
            self._apply_one_by_one(events, after)
        return after

    def _apply_one_by_one(self, events: list[Mapping[str, Any]], cursor: str) -> None:
        for event in events:
            try:
                self._store.apply_events([event])
            except HistoryError:
                raise
            except Exception:  # logged and skipped, as a malformed event is
                log.warning("history: skipping an event it cannot apply: %.200r", event, exc_info=True)
        self._store.save_cursor(cursor)

    def sample(self, now: float) -> None:
        """Record each queue's depth and each TaskQueue's replicas at ``now``; errors are logged (the next sample
        tries again)."""
        try:
            samples = []
            for queue in self._broker.queues():
                depth = self._broker.queue_depth(queue)
                samples.append(model.QueueSample(
                    at=now, queue=queue, ready=depth.ready + depth.due,
                    in_flight=depth.in_flight if depth.in_flight_known else None,
                    delayed=depth.delayed if depth.delayed_known else None, dead=depth.dead))
            self._store.record_queue_samples(samples)
        except (TaskfleetError, OSError) as exc:
            log.warning("history: sampling queue depths failed: %s", exc)
        if self._kube is None:
            return
        try:
            self._store.record_scale_samples([scale_sample(v, now) for v in self._kube.task_queues()])
        except Exception as exc:  # noqa: BLE001 - a KubeSource's errors are its client's; the next sample retries
            log.warning("history: sampling TaskQueues failed: %s", exc)

    def _prune(self, now: float) -> None:
        try:
            dropped = self._store.prune(now=now)
        except HistoryError as exc:
            log.warning("history: pruning failed: %s", exc)
            return
        if dropped:
            log.info("history: pruned %d tasks", dropped)

    def _close_fleet(self) -> None:
        fleet, self._fleet = self._fleet, None
        if fleet is not None:
            try:
                fleet.close()
            except Exception:  # closing a broken connection
                log.debug("history: closing the fleet store failed", exc_info=True)
