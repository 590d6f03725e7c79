"""What the chaos suite asserts, computed from the ledger (tests/support/ledger.py), the faults injected
(tests/support/faults.py), what the publisher had confirmed, the dead-letter list and the result backend.

Every duplicate run of a task must be explained by a fault that hit an earlier run of it:
- the earlier run's process was SIGKILLed (child or whole worker, or by a poison task it ran next) or SIGSTOPped
  while it ran, before its final state
  was stored (result-keeping tasks) or before its ack could have gone out (``ignore_result`` tasks: within
  ``ACK_WINDOW_S`` of the end of its body);
- the broker restarted while it ran (a Redis lease may run out during the outage; an ack may be lost);
- on RabbitMQ, its publish overlapped a broker restart (a lost confirm is retried: the message is stored twice).
A run that starts after a final state of the same attempt was stored is a finished task run again: the result-store
check should have acked it unrun. A task may be dead-lettered for failed deliveries only when faults hit it
``max_deliveries`` times.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass, field

from taskfleet.brokers.base import DeadLetter
from tests.support.faults import BROKER_RESTART, KILL_CHILD, KILL_WORKER, POISON_KILL, SIGSTOP, Fault
from tests.support.ledger import Ledger, Run

#: An ``ignore_result`` task's ack goes out at most about 100 ms after its end (docs/worker.md); margin for a
#: loaded 2-core machine.
ACK_WINDOW_S = 0.5
HEALTHY_KINDS = ("work", "quiet")


@dataclass(frozen=True)
class Sent:
    """A task the publisher sent and the broker confirmed (``send`` returned), with the call's time window."""

    task_id: str
    kind: str
    begin: float
    end: float


@dataclass(frozen=True)
class Poison:
    name: str
    message_id: str
    reason: str  # a substring the dead letter's reason must contain


@dataclass
class Verdict:
    broker: str
    problems: dict[str, list[str]] = field(default_factory=dict)
    duplicate_causes: Counter[str] = field(default_factory=Counter)
    rerun_delays: list[float] = field(default_factory=list)
    runs: int = 0
    tasks_run_twice: int = 0

    def problem(self, check: str, detail: str) -> None:
        self.problems.setdefault(check, []).append(detail)


def _fin(run: Run) -> float:
    """Until when a fault on ``run``'s process can make it run again."""
    if run.kind == "quiet":
        return run.end + ACK_WINDOW_S if run.end is not None else math.inf
    return run.stored if run.stored is not None else math.inf


def hit(run: Run, faults: list[Fault]) -> Fault | None:
    """The first fault that hit ``run`` before it was finished (see the module docstring)."""
    fin = _fin(run)
    for f in faults:
        # A kill spans begin to end (a worker's processes are killed one after another): a run its process started
        # meanwhile was killed by it too.
        if f.kind in (KILL_CHILD, KILL_WORKER, POISON_KILL) and run.pid in f.pids and run.start <= f.end \
                and f.begin <= fin:
            return f
        if f.kind == SIGSTOP and run.pid in f.pids and run.start <= f.begin <= fin:
            return f
        if f.kind == BROKER_RESTART and f.begin <= fin and f.end >= run.start:
            return f
    return None


def killed_before_its_ack(run: Run, faults: list[Fault]) -> bool:
    """Whether ``run``'s process was killed after its final state was stored but before its batched ack could have
    gone out (``ACK_WINDOW_S``): its redelivery is counted (docs/brokers.md: so that it is recognised by its stored
    state and acked unrun), so it counts towards ``max_deliveries`` without running again."""
    fin = _fin(run)
    return math.isfinite(fin) and any(
        f.kind in (KILL_CHILD, KILL_WORKER, POISON_KILL) and run.pid in f.pids and fin <= f.begin <= fin + ACK_WINDOW_S
        for f in faults)


def judge(broker: str, *, sent: list[Sent], ledger: Ledger, faults: list[Fault], dead: list[DeadLetter],
          poison: list[Poison], states: dict[str, str], max_deliveries: int, lease_brokers: bool,
          clock_offset: float) -> Verdict:
    """Run every check. ``states``: the stored state of each ``work`` task; ``clock_offset``: ``time.time() -
    time.monotonic()``, to place a dead letter's ``dead_at`` on the ledger's clock."""
    v = Verdict(broker)
    faults = sorted([*faults, *poison_kills(ledger)], key=lambda f: f.begin)
    # A retried attempt is its own message, ``<task id>:<retries>``: dead letters are looked up by task id.
    dead_by_id = {d.message_id.partition(":")[0]: d for d in dead}
    check_duplicates(v, sent, ledger, faults)
    check_losses(v, sent, ledger, states, dead_by_id)
    check_dead_letters(v, sent, ledger, faults, dead_by_id, poison, max_deliveries=max_deliveries,
                       lease_brokers=lease_brokers, clock_offset=clock_offset)
    return v


def poison_kills(ledger: Ledger) -> list[Fault]:
    """Each run of the ``suicide`` poison task, as the fault it is for the other runs of its child."""
    return [Fault(POISON_KILL, r.start, r.start, frozenset({r.pid}), r.task_id)
            for runs in ledger.runs.values() for r in runs if r.kind == "suicide"]


def check_duplicates(v: Verdict, sent: list[Sent], ledger: Ledger, faults: list[Fault]) -> None:
    """Every run after a task's first is explained by a fault that hit an earlier one (module docstring)."""
    restarts = [f for f in faults if f.kind == BROKER_RESTART]
    sent_by_id = {s.task_id: s for s in sent}
    for key, runs in ledger.runs.items():
        if runs[0].kind not in (*HEALTHY_KINDS, "fails"):
            continue
        v.runs += len(runs)
        if len(runs) > 1:
            v.tasks_run_twice += 1
        s = sent_by_id.get(key[0])
        republished = s is not None and any(f.begin <= s.end and f.end >= s.begin for f in restarts)
        for j, later in enumerate(runs[1:], start=1):
            if republished:
                v.duplicate_causes["duplicate publish (broker restart)"] += 1
                continue
            _explain(v, later, runs[:j], ledger, faults)


def _explain(v: Verdict, later: Run, earlier: list[Run], ledger: Ledger, faults: list[Fault]) -> None:
    where = f"{later.kind} {later.task_id} attempt {later.attempt}: run {len(earlier) + 1} in pid {later.pid} at " \
            f"{later.start:.3f} (count {later.delivery_count})"
    history = "; ".join(f"pid {r.pid} {r.start:.3f}-{r.end if r.end is None else round(r.end, 3)}"
                        f" stored={r.stored if r.stored is None else round(r.stored, 3)}"
                        f" count={r.delivery_count}" for r in earlier)
    stores = [t for t, _, _ in ledger.stores.get(later.key, []) if t < later.start]
    if later.kind != "quiet" and stores:
        v.problem("finished task run again", f"{where}, its final state stored at {min(stores):.3f} [{history}]")
        return
    causes = [(r, f) for r in earlier if (f := hit(r, faults)) is not None]
    if later.kind == "quiet":
        finished = [r for r in earlier if r.end is not None and r.end < later.start]
        unexplained = [r for r in finished if all(r is not c for c, _ in causes)]
        if unexplained:
            v.problem("finished task run again", f"{where} after its run ended at {unexplained[0].end:.3f} with no "
                                                 f"fault in its ack window [{history}]")
            return
    if not causes:
        v.problem("unexplained duplicate", f"{where}, no fault hit an earlier run [{history}]")
        return
    _, fault = causes[-1]
    v.duplicate_causes[fault.kind] += 1
    if fault.kind in (KILL_CHILD, KILL_WORKER, POISON_KILL, SIGSTOP):
        v.rerun_delays.append(later.start - fault.begin)


def check_losses(v: Verdict, sent: list[Sent], ledger: Ledger, states: dict[str, str],
                 dead_by_id: dict[str, DeadLetter]) -> None:
    """Every confirmed healthy task finished (a ``work`` task's SUCCESS stored), unless it was dead-lettered."""
    for s in sent:
        if s.task_id in dead_by_id:
            continue
        runs = ledger.runs.get((s.task_id, 0), [])
        if s.kind == "work" and states.get(s.task_id) != "SUCCESS":
            v.problem("lost", f"work {s.task_id} confirmed at {s.end:.3f}: state {states.get(s.task_id)}, "
                              f"{len(runs)} runs, not dead-lettered")
        if s.kind == "quiet" and not any(r.end is not None for r in runs):
            v.problem("lost", f"quiet {s.task_id} confirmed at {s.end:.3f}: never finished, not dead-lettered")


def check_dead_letters(v: Verdict, sent: list[Sent], ledger: Ledger, faults: list[Fault],
                       dead_by_id: dict[str, DeadLetter], poison: list[Poison], *, max_deliveries: int,
                       lease_brokers: bool, clock_offset: float) -> None:
    """Every poison message is dead-lettered with its reason; a healthy task only after ``max_deliveries`` faults."""
    for p in poison:
        d = dead_by_id.get(p.message_id.partition(":")[0])
        if d is None:
            v.problem("poison", f"{p.name} ({p.message_id}) is not dead-lettered")
        elif p.reason not in d.reason:
            v.problem("poison", f"{p.name} ({p.message_id}) dead-lettered for {d.reason!r}, expected {p.reason!r}")
    # Prefetched messages of a whole killed worker (or, on a lease broker, of a stopped child) come back counted.
    worker_faults = [f for f in faults
                     if f.kind in (KILL_WORKER, BROKER_RESTART) or (f.kind == SIGSTOP and lease_brokers)]
    for s in sent:
        d = dead_by_id.get(s.task_id)
        if s.kind not in HEALTHY_KINDS or d is None:
            continue
        runs = ledger.runs.get((s.task_id, 0), [])
        interrupted = sum(1 for r in runs if hit(r, faults) is not None or killed_before_its_ack(r, faults))
        dead_at = d.dead_at - clock_offset
        nearby = sum(1 for f in worker_faults if f.begin <= dead_at and f.end >= s.begin)
        if interrupted + nearby < max_deliveries:
            v.problem("healthy dead-lettered", f"{s.kind} {s.task_id}: {d.reason!r}; {len(runs)} runs, "
                                               f"{interrupted} hit by faults, {nearby} worker-level faults in its life "
                                               f"(max_deliveries={max_deliveries}); counts seen "
                                               f"{[r.delivery_count for r in runs]}")


def summary(v: Verdict, *, seed: int, sent: list[Sent], failed_publishes: int, faults: list[Fault],
            skipped: list[str], dead: list[DeadLetter], poison: list[Poison], duration_s: float) -> str:
    kinds = Counter(s.kind for s in sent)
    fault_counts = Counter(f.kind for f in faults)
    delays = sorted(v.rerun_delays)
    delay = (f"median {statistics.median(delays):.2f} s, max {delays[-1]:.2f} s (n={len(delays)})"
             if delays else "none")
    poison_ids = {p.message_id for p in poison}
    dead_poison = sum(d.message_id.partition(":")[0] in poison_ids for d in dead)
    rows = [
        ("broker", v.broker),
        ("seed", f"{seed} (CHAOS_SEED={seed} replays the schedule)"),
        ("tasks confirmed", ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) + f"; {failed_publishes} "
                                                                                       "publishes failed"),
        ("runs (healthy + failing)", f"{v.runs}; tasks run more than once: {v.tasks_run_twice}"),
        ("duplicate runs by cause", ", ".join(f"{k}: {n}" for k, n in sorted(v.duplicate_causes.items())) or "none"),
        ("faults injected", ", ".join(f"{k}: {n}" for k, n in sorted(fault_counts.items()))
         + (f" (skipped: {'; '.join(skipped)})" if skipped else "")),
        ("fault -> rerun", delay),
        ("dead letters", f"{dead_poison}/{len(poison)} poison, {len(dead) - dead_poison} other"),
        ("failed checks", ", ".join(f"{k}: {len(x)}" for k, x in sorted(v.problems.items())) or "none"),
        ("duration", f"{duration_s:.1f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(["", f"== chaos summary ({v.broker}) =="] + [f"{k:<{width}}  {val}" for k, val in rows])
