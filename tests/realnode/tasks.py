"""The tasks of the realnode tier's worker image (localhost/taskfleet-worker-test:local, built by
tests/k8s/build-images.sh from this file). Worker pods import it as ``tasks:app``; tests import it as
``tests.realnode.tasks`` to send by the same names (``realnode.add`` ...).

Tasks that must be checked from outside append a JSON line to a Redis list, the *ledger* (``ledger_url``, ``key``),
with the wall-clock time of the run (pods and the test share the machine's clock) and the pod's name: one entry per
run, so "ran exactly once" is ``len == 1``. The ledger is passed as an argument rather than taken from the broker URL,
so a queue on RabbitMQ records to Redis just the same. Other helpers add tasks here; keep each one small.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

import redis

from taskfleet import App, Task

app = App("realnode", default_queue="realnode")

_ledgers: dict[str, redis.Redis] = {}


def _append(ledger_url: str, key: str, **fields: Any) -> None:
    """Append one ledger entry: ``fields`` plus the time (``t``, Unix seconds) and the pod's name (``pod``)."""
    client = _ledgers.get(ledger_url)
    if client is None:
        client = _ledgers[ledger_url] = redis.Redis.from_url(ledger_url)
    entry = {**fields, "t": time.time(), "pod": os.environ.get("HOSTNAME", socket.gethostname())}
    client.rpush(key, json.dumps(entry))


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def sleep(seconds: float) -> float:
    """Hold a worker child for ``seconds``; returns it."""
    time.sleep(seconds)
    return seconds


@app.task
def record(ledger_url: str, key: str, marker: str, seconds: float = 0.0) -> str:
    """Sleep ``seconds`` (0: none), then append ``marker`` to the ledger: proof that (and when, and where) it ran."""
    if seconds:
        time.sleep(seconds)
    _append(ledger_url, key, marker=marker)
    return marker


@app.task(bind=True, max_retries=10)
def retry_then_record(self: Task[Any], ledger_url: str, key: str, marker: str, retries: int,
                      backoff_s: float) -> str:
    """Fail ``retries`` times, retrying after ``backoff_s * 2**n`` seconds (exponential backoff), then append
    ``marker``. Every attempt appends ``{"attempt": n}`` first, so the ledger shows when each one ran."""
    attempt = self.request.retries
    _append(ledger_url, key, marker=f"{marker}:attempt", attempt=attempt)
    if attempt < retries:
        self.retry(countdown=backoff_s * 2**attempt)
    _append(ledger_url, key, marker=marker, attempt=attempt)
    return marker
