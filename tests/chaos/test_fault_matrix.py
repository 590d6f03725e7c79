"""The fault matrix (issue 15): on each broker, a publisher and two workers (two children each) run a few hundred
tasks of 10-200 ms (and some of 0.6-1.2 s) while a seeded schedule injects, one at a time: kill -9 of children
mid-task, kill -9 of a whole worker (then a replacement), SIGSTOP of a child past its lease, a broker restart
(Redis with AOF, RabbitMQ stop/start; SQLite has no server), a SIGTERM drain (then a replacement), and poison
messages. A ledger kept outside the broker (tests/support/ledger.py) records every run; tests/chaos/verdict.py
checks it against what was confirmed and the faults injected.

``CHAOS_SEED=<n>`` replays a run's schedule and workload (process timing still varies); the seed and a summary table
are printed (``pytest -s``) and the summary is part of every failure message. docs/reliability.md has the details.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskfleet.settings import PublishRetry
from tests.chaos import tasks
from tests.chaos.harness import Fleet, Injector, Publisher, Workload
from tests.chaos.verdict import judge, summary
from tests.support.brokers import BrokerKind, Capability
from tests.support.ledger import Ledger
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

#: Publish retries that outlast a restart of either server (about 30 s).
RIDE_THROUGH = PublishRetry(max_attempts=60, backoff_s=0.1, backoff_max_s=0.5)
SETTLE_TIMEOUT_S = 120.0


def chaos_seed() -> int:
    raw = os.environ.get("CHAOS_SEED")
    return int(raw) if raw else random.SystemRandom().randrange(1, 10**6)


@pytest.fixture
def fleet(broker_kind: BrokerKind, broker_url: str, backend_url: str) -> Iterator[Fleet]:
    fleet = Fleet(broker_kind, broker_url, backend_url)
    yield fleet
    fleet.stop_all()


@pytest.mark.timeout(600)
def test_no_confirmed_task_is_lost_and_every_duplicate_has_a_cause(
        broker_kind: BrokerKind, broker_url: str, backend_url: str, fleet: Fleet, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    seed = chaos_seed()
    print(f"\nchaos {broker_kind.name}: CHAOS_SEED={seed}", flush=True)
    began = time.monotonic()
    clock_offset = time.time() - time.monotonic()
    ledger_path = tmp_path / "ledger.txt"
    monkeypatch.setenv(tasks.ENV_LEDGER, str(ledger_path))
    app = tasks.app
    app.configure(broker=broker_url, broker_management_url=broker_kind.management_url, result_backend=backend_url,
                  publish_retry=RIDE_THROUGH)
    try:
        fleet.start()
        fleet.start()
        publisher = Publisher(app, random.Random(f"{seed}:{broker_kind.name}:publisher"), Workload())
        injector = Injector(fleet, broker_kind, random.Random(f"{seed}:{broker_kind.name}:faults"), ledger_path,
                            publisher)
        plan = injector.schedule()
        print(f"chaos {broker_kind.name}: schedule {plan}", flush=True)
        publisher.start()
        injector.play(plan)
        publisher.finish(timeout_s=120)
        assert not publisher.is_alive(), "the publisher is stuck"
        assert publisher.error is None, f"the publisher failed: {publisher.error!r}"

        def settled() -> bool:
            ledger = Ledger.read(ledger_path)
            dead = {d.message_id.partition(":")[0] for d in app.broker.dead_letters(tasks.QUEUE, limit=10_000)}
            finished = {key[0] for key, stores in ledger.stores.items() if stores} | {
                key[0] for key, runs in ledger.runs.items() if runs[0].kind == "quiet" and any(r.end for r in runs)}
            return (all(s.task_id in finished or s.task_id in dead for s in publisher.sent)
                    and all(p.message_id in dead for p in publisher.poison))

        faulted = time.monotonic()
        try:
            wait_for(settled, timeout=SETTLE_TIMEOUT_S, interval=0.5)
        except AssertionError:
            print(f"chaos {broker_kind.name}: not settled after {SETTLE_TIMEOUT_S}s; judging what there is")
        print(f"chaos {broker_kind.name}: faults done at {faulted - began:.1f}s, settled in "
              f"{time.monotonic() - faulted:.1f}s", flush=True)
        for worker in list(fleet.live):  # the final drains: exit 0, nothing left behind
            fleet.drain(worker)

        ledger = Ledger.read(ledger_path)
        dead = app.broker.dead_letters(tasks.QUEUE, limit=10_000)
        states = {s.task_id: str(r.state) for s in publisher.sent if s.kind == "work"
                  and (r := app.backend.get(s.task_id)) is not None} if app.backend else {}
        faults = injector.log.faults
        verdict = judge(broker_kind.name, sent=publisher.sent, ledger=ledger, faults=faults, dead=dead,
                        poison=publisher.poison, states=states, max_deliveries=tasks.MAX_DELIVERIES,
                        lease_brokers=broker_kind.supports(Capability.LEASES), clock_offset=clock_offset)
        for problem in fleet.exits:
            verdict.problem("worker exit", problem)
        skipped = list(injector.skipped)
        report = summary(verdict, seed=seed, sent=publisher.sent, failed_publishes=publisher.failed, faults=faults,
                         skipped=skipped, dead=dead, poison=publisher.poison, duration_s=time.monotonic() - began)
        print(report, flush=True)
        timeline = "\n".join(f"  {f.begin:.3f}-{f.end:.3f} {f.kind} pids={sorted(f.pids)} {f.note}" for f in faults)
        (tmp_path / "summary.txt").write_text(f"{report}\nfaults:\n{timeline}\n")
        details = "\n".join(f"[{check}] {len(items)}:\n  " + "\n  ".join(items[:8])
                            for check, items in sorted(verdict.problems.items()))
        assert not verdict.problems, f"{report}\n{details}\nfaults:\n{timeline}\nledger: {ledger_path}"
    finally:
        app.close()
