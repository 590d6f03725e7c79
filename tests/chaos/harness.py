"""The moving parts of a chaos run: a publisher of bursts of healthy tasks (and, once, the poison messages), the
workers, and the injector that plays a seeded schedule of faults against them."""

from __future__ import annotations

import contextlib
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from taskfleet import App
from taskfleet.errors import BrokerError
from tests.chaos import tasks
from tests.chaos.verdict import Poison, Sent
from tests.support import faults as fx
from tests.support.brokers import BrokerKind, Capability
from tests.support.faults import Fault, FaultLog
from tests.support.ledger import Ledger
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess, children_of

CONCURRENCY = 2
PREFETCH = 8
DRAIN_TIMEOUT_S = 15.0
#: A SIGSTOP lasts past the lease of what the child holds.
STOP_S = tasks.VISIBILITY_TIMEOUT_S + 2.5
BROKER_OUTAGE_S = 1.0
#: Faults of one run, in a seeded order, one at a time (so each duplicate has one cause to find).
SCHEDULE = ([fx.KILL_CHILD] * 8 + [fx.KILL_WORKER] + [fx.SIGSTOP] * 2 + [fx.BROKER_RESTART] + [fx.DRAIN])


@dataclass
class Workload:
    #: Bursts are published until the injector is done (``Publisher.finish``), at least ``min_bursts`` of them and at
    #: most ``max_bursts``.
    min_bursts: int = 6
    max_bursts: int = 14
    burst_size: int = 30
    burst_gap_s: float = 3.0
    #: Share of long tasks (they make a child give back its prefetched messages after 0.5 s).
    long_share: float = 0.12
    quiet_share: float = 0.15


class Publisher(threading.Thread):
    """Publishes ``workload`` in bursts (so children hold full prefetch windows), and the poison messages once,
    in a burst picked by the seed. Keeps what was confirmed (``send`` returned) with its time window."""

    def __init__(self, app: App, rng: random.Random, workload: Workload) -> None:
        super().__init__(name="chaos-publisher", daemon=True)
        self.app = app
        self.rng = rng
        self.workload = workload
        self.sent: list[Sent] = []
        self.failed = 0
        self.poison: list[Poison] = []
        self.poison_burst = rng.randrange(1, workload.min_bursts - 1)
        self._finishing = threading.Event()
        self.error: BaseException | None = None
        self._burst = threading.Condition()
        self._bursts_done = 0

    def wait_burst(self, timeout_s: float) -> bool:
        """Wait for the next burst to be published (children then hold full prefetch windows); False when none
        came in time (the publisher is done)."""
        with self._burst:
            seen = self._bursts_done
            return self._burst.wait_for(lambda: self._bursts_done > seen, timeout=timeout_s)

    def run(self) -> None:
        try:
            for burst in range(self.workload.max_bursts):
                if burst >= self.workload.min_bursts and self._finishing.is_set():
                    return
                for _ in range(self.workload.burst_size):
                    self._one()
                if burst == self.poison_burst:
                    self._poison()
                with self._burst:
                    self._bursts_done += 1
                    self._burst.notify_all()
                time.sleep(self.workload.burst_gap_s)
        except BaseException as exc:
            self.error = exc

    def finish(self, timeout_s: float) -> None:
        """Publish no more bursts than ``min_bursts`` from now on, and wait for the thread to end."""
        self._finishing.set()
        self.join(timeout=timeout_s)

    def _one(self) -> None:
        w = self.workload
        ms = self.rng.randint(600, 1200) if self.rng.random() < w.long_share else self.rng.randint(10, 200)
        task = tasks.quiet if self.rng.random() < w.quiet_share else tasks.work
        begin = time.monotonic()
        try:
            result = task.delay(ms)
        except BrokerError:
            self.failed += 1
            return
        self.sent.append(Sent(result.id, "quiet" if task is tasks.quiet else "work", begin, time.monotonic()))

    def _poison(self) -> None:
        broker = self.app.broker
        tag = f"{self.rng.getrandbits(32):08x}"
        raw = [
            ("malformed bytes", f"poison-malformed-{tag}", b"\x00\x01 not a message", "malformed message"),
            ("pickle content type", f"poison-pickle-{tag}", b"application/x-python-pickle\n\x80\x04K\x01.",
             "not accepted"),
            ("oversized", f"poison-oversized-{tag}", b"x" * (tasks.MAX_MESSAGE_BYTES + 1), "oversized message"),
        ]
        for name, message_id, data, reason in raw:
            broker.enqueue(tasks.QUEUE, message_id, data)
            self.poison.append(Poison(name, message_id, reason))
        unknown = self.app.send("chaos.no_such_task", queue=tasks.QUEUE)
        self.poison.append(Poison("unknown task", unknown.id, "not registered"))
        fails = tasks.always_fails.delay()
        self.poison.append(Poison("always raises", fails.id, f"max retries ({tasks.FAILING_MAX_RETRIES}) exceeded"))
        self.sent.append(Sent(fails.id, "fails", time.monotonic(), time.monotonic()))
        suicide = tasks.suicide.delay()
        self.poison.append(Poison("kills its process", suicide.id, "without an ack"))


@dataclass
class Fleet:
    """The workers of a run: the live ones, and every one ever started (to check exits and leftovers)."""

    kind: BrokerKind
    broker_url: str
    backend_url: str
    live: list[WorkerProcess] = field(default_factory=list)
    started: list[WorkerProcess] = field(default_factory=list)
    exits: list[str] = field(default_factory=list)  # problems with drains: exit codes, processes left behind

    def start(self) -> WorkerProcess:
        worker = WorkerProcess(broker=self.broker_url, backend=self.backend_url, app="tests.chaos.tasks:app",
                               queues=tasks.QUEUE, concurrency=CONCURRENCY,
                               extra=[*self.kind.worker_args, "--prefetch", str(PREFETCH),
                                      "--drain-timeout", str(DRAIN_TIMEOUT_S)])
        self.started.append(worker)
        worker.wait_started(timeout=30)
        self.live.append(worker)
        return worker

    def drain(self, worker: WorkerProcess) -> frozenset[int]:
        """SIGTERM ``worker``; it must exit 0 and leave no process behind."""
        pids = frozenset({worker.pid, *children_of(worker.pid)})
        self.live.remove(worker)
        worker.signal(signal.SIGTERM)
        try:
            code = worker.wait_exit(timeout=DRAIN_TIMEOUT_S + 15)
        except Exception:
            code = None
        if code != 0:
            self.exits.append(f"worker {worker.pid} exited {code} after SIGTERM (log {worker.log_path})")
        with contextlib.suppress(AssertionError):
            wait_for(lambda: all(fx.process_gone(p) for p in pids), timeout=10)
        left = sorted(p for p in pids if not fx.process_gone(p))
        if left:
            self.exits.append(f"worker {worker.pid} left processes behind after its drain: {left}")
            for p in left:
                fx.kill(p)
        worker.stop()
        return pids

    def kill(self, worker: WorkerProcess) -> frozenset[int]:
        self.live.remove(worker)
        pids = fx.kill_tree(worker.pid)
        worker.proc.wait(timeout=10)
        worker.stop()
        return pids

    def stop_all(self) -> None:
        for worker in self.started:
            worker.stop()
            for child in children_of(worker.pid):
                fx.kill(child)


class Injector:
    """Plays the seeded schedule of faults against ``fleet`` and the broker, one at a time."""

    def __init__(self, fleet: Fleet, kind: BrokerKind, rng: random.Random, ledger_path: Path,
                 publisher: Publisher) -> None:
        self.fleet = fleet
        self.publisher = publisher
        self.kind = kind
        self.rng = rng
        self.ledger_path = ledger_path
        self.log = FaultLog()
        self.skipped: list[str] = []
        #: faults that hit each task (killed or stopped while running it): a healthy task is not hit
        #: ``max_deliveries`` times, so a dead-lettered healthy task always means miscounting
        self.hits: dict[str, int] = {}

    def schedule(self) -> list[str]:
        plan = list(SCHEDULE)
        self.rng.shuffle(plan)
        return plan

    def play(self, plan: list[str], gap_s: tuple[float, float] = (0.5, 1.5)) -> None:
        for kind in plan:
            time.sleep(self.rng.uniform(*gap_s))
            getattr(self, kind)()

    # -- the faults ----------------------------------------------------------------------------------------------

    def _after_burst(self) -> None:
        """Most faults hit children that hold a full prefetch window: just after a burst, when there is one."""
        if self.publisher.wait_burst(self.publisher.workload.burst_gap_s + 2):
            time.sleep(self.rng.uniform(0.1, 0.6))

    def _busy_children(self, timeout_s: float = 5.0) -> list[tuple[int, str]]:
        """(pid, task id) of children running a healthy task not hit too often yet; waits for one."""
        found: list[tuple[int, str]] = []

        def look() -> bool:
            ledger = Ledger.read(self.ledger_path)
            found.clear()
            for worker in self.fleet.live:
                for pid in children_of(worker.pid):
                    run = ledger.running_in(pid)
                    if (run is not None and run.kind in ("work", "quiet")
                            and self.hits.get(run.task_id, 0) < tasks.MAX_DELIVERIES - 1):
                        found.append((pid, run.task_id))
            return bool(found)

        with contextlib.suppress(AssertionError):
            wait_for(look, timeout=timeout_s, interval=0.03)
        return sorted(found)

    def _pick_busy_child(self, fault: str) -> tuple[int, str] | None:
        """A child running a task, and that task, chosen at random; None (noted as skipped) when none is busy."""
        busy = self._busy_children()
        if not busy:
            self.skipped.append(f"{fault}: no child was running a task")
            return None
        return self.rng.choice(busy)

    def kill_child(self) -> None:
        if self.rng.random() < 0.7:
            self._after_burst()
        picked = self._pick_busy_child("kill_child")
        if picked is None:
            return
        pid, task_id = picked
        t = time.monotonic()
        if fx.kill(pid):
            self.hits[task_id] = self.hits.get(task_id, 0) + 1
            self.log.add(Fault(fx.KILL_CHILD, t, time.monotonic(), frozenset({pid}), f"running {task_id}"))

    def kill_worker(self) -> None:
        worker = self.rng.choice(self.fleet.live)
        for pid, task_id in self._busy_children(timeout_s=0.5):
            if pid in children_of(worker.pid):
                self.hits[task_id] = self.hits.get(task_id, 0) + 1
        t = time.monotonic()
        pids = self.fleet.kill(worker)  # one process after another: a child may start a task until its own SIGKILL
        self.log.add(Fault(fx.KILL_WORKER, t, time.monotonic(), pids, f"worker {worker.pid}"))
        self.fleet.start()

    def sigstop(self) -> None:
        self._after_burst()
        picked = self._pick_busy_child("sigstop")
        if picked is None:
            return
        pid, task_id = picked
        self.hits[task_id] = self.hits.get(task_id, 0) + 1
        t = time.monotonic()
        fx.kill(pid, signal.SIGSTOP)
        time.sleep(STOP_S)
        fx.kill(pid, signal.SIGCONT)
        self.log.add(Fault(fx.SIGSTOP, t, time.monotonic(), frozenset({pid}), f"running {task_id}"))

    def broker_restart(self) -> None:
        if not self.kind.supports(Capability.SERVER):
            self.skipped.append(f"broker_restart: {self.kind.name} has no server")
            return
        t = time.monotonic()
        self.kind.stop()
        time.sleep(BROKER_OUTAGE_S)
        self.kind.start()
        self.log.add(Fault(fx.BROKER_RESTART, t, time.monotonic(), note=self.kind.name))

    def drain(self) -> None:
        worker = self.rng.choice(self.fleet.live)
        t = time.monotonic()
        pids = self.fleet.drain(worker)
        self.log.add(Fault(fx.DRAIN, t, time.monotonic(), pids, f"worker {worker.pid}"))
        self.fleet.start()
