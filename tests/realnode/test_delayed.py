"""Delayed and retried work at zero replicas runs on time, with real pods: a countdown, an ETA and a retry with
backoff sent to a TaskQueue scaled to zero wake its workers when due. Before the operator counted due messages
(``QueueDepth.due``), a countdown on Redis at zero replicas never ran: delayed messages become ready only when a
worker fetches, and the operator scaled on ready + in-flight only."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from taskfleet import App
from tests.realnode.cluster import RealNode, taskqueue
from tests.realnode.conftest import Ledger, PodBroker, Release

pytestmark = pytest.mark.timeout(300)

#: Delays long enough that the worker started by the retry's first attempt has scaled back to zero before any of
#: the three is due (measured: at zero replicas, no pod left, ~12 s after sending; the earliest is due after 25 s).
COUNTDOWN_S = 25.0
ETA_S = 30.0
BACKOFF_S = 22.0
#: How late a due task may run: a poll (1 s), a pod start (~3-5 s on this node), a fetch, with room for a busy CI.
LATE_S = 25.0
WORKER_SELECTOR = "app.kubernetes.io/name=taskfleet-worker"


def _one(entries: list[dict[str, Any]], marker: str) -> dict[str, Any]:
    found = [e for e in entries if e["marker"] == marker]
    assert len(found) == 1, f"{marker} ran {len(found)} times: {entries}"
    return found[0]


def test_a_countdown_an_eta_and_a_retry_with_backoff_wake_a_queue_at_zero_replicas_when_due(
    cluster: RealNode, chart: Release, namespace: str, broker: PodBroker,
    broker_secret: Callable[[str, PodBroker], str], sender: Callable[[PodBroker], App], ledger: Ledger,
) -> None:
    # Given a TaskQueue at zero replicas
    secret = broker_secret(namespace, broker)
    cluster.apply(taskqueue("later", queues=["later"], broker_secret=secret, management_key=broker.management_key,
                            max_replicas=1, stabilization_s=3), namespace)
    cluster.wait_until("later-worker at 0 replicas", lambda: cluster.replicas(namespace, "later-worker")[0] == 0,
                       timeout=60)
    # When a retrying task (one failure, then a retry after BACKOFF_S), a countdown and an ETA are sent to it
    app = sender(broker)
    sent = time.time()
    app.send("realnode.retry_then_record", (ledger.url, ledger.key, "retried", 1, BACKOFF_S), queue="later")
    app.send("realnode.record", (ledger.url, ledger.key, "countdown"), countdown=COUNTDOWN_S, queue="later")
    app.send("realnode.record", (ledger.url, ledger.key, "eta"), eta=datetime.now(UTC) + timedelta(seconds=ETA_S),
             queue="later")
    # Then the retrying task's first attempt wakes a worker, which then goes away: the queue is at zero replicas,
    # with no pod left, before any of the three is due
    first = cluster.wait_until("the first attempt", lambda: [e for e in ledger.entries() if e.get("attempt") == 0],
                               timeout=60)[0]
    retry_due = first["t"] + BACKOFF_S
    earliest_due = min(sent + COUNTDOWN_S, retry_due)
    cluster.wait_until("back to 0 replicas, no pod", lambda: cluster.replicas(namespace, "later-worker")[0] == 0
                       and not cluster.pods(namespace, WORKER_SELECTOR), timeout=earliest_due - time.time())
    zero_at = time.time()
    assert zero_at < earliest_due
    # And each one runs once, when due: not before, and no later than LATE_S after
    cluster.wait_until("all three ran", lambda: {"countdown", "eta", "retried"} <= {e["marker"] for e in
                                                                                    ledger.entries()},
                       timeout=ETA_S + LATE_S + 30)
    entries = ledger.entries()
    lateness = {}
    for marker, due in (("countdown", sent + COUNTDOWN_S), ("eta", sent + ETA_S), ("retried", retry_due)):
        ran = _one(entries, marker)["t"]
        assert due - 0.5 <= ran <= due + LATE_S, f"{marker}: due at +{due - sent:.1f} s, ran at +{ran - sent:.1f} s"
        lateness[marker] = ran - due
    print(f"[{broker.kind}] zero replicas {earliest_due - zero_at:.1f} s before the first due; ran late by "
          + ", ".join(f"{m} {s:.1f} s" for m, s in lateness.items()))
