"""``make demo``: Taskfleet end to end on this machine in a few seconds, with no server to install.

Starts ``taskfleet worker -A examples.demo_tasks:app -c 2 --beat`` on the embedded SQLite broker (a fresh file in a
new temporary directory, which is also the result backend), sends a batch of tasks (30 ``add``, 4 ``resize_image``,
a ``flaky_charge`` that fails once and is retried, a ``send_reminder`` with a 2 s countdown) while beat sends
``heartbeat`` every second, shows their progress, prints a summary table and drains the worker with SIGTERM. Exit
code 0 only when every task ended as expected, two heartbeats ran and the worker exited 0.

``TASKFLEET_BROKER_URL`` runs the same demo on Redis or RabbitMQ (``redis://127.0.0.1:6379/0``,
``amqp://user:pass@127.0.0.1:5672/%2F``). Results then go to that Redis or, for RabbitMQ, to the demo's SQLite
file (``TASKFLEET_RESULT_BACKEND`` picks another backend).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from examples import demo_tasks
from taskfleet import READY_STATES, AsyncResult, State
from taskfleet.settings import ENV_BROKER_URL, ENV_RESULT_BACKEND
from taskfleet.urls import mask_url, url_scheme
from taskfleet.worker.beat import tick_id

ROOT = Path(__file__).resolve().parents[1]
#: The worker's --drain-timeout, in seconds: a drain that needs it (its children killed) is no graceful drain.
DRAIN_TIMEOUT_S = 10
#: Quiet logs (warnings go to worker.log, printed at the end); a free health port, so two demos never collide.
WORKER_ARGS = ("worker", "-A", "examples.demo_tasks:app", "-c", "2", "--beat", "-l", "warning", "--log-format",
               "console", "--health-host", "127.0.0.1", "--health-port", "0", "--drain-timeout", str(DRAIN_TIMEOUT_S))
#: Every task must have ended this many seconds after the worker started (a run takes about 3 s).
DEADLINE_S = 20.0
#: How long the drain after SIGTERM may take before the demo kills the worker, in seconds.
STOP_TIMEOUT_S = 20.0
POLL_S = 0.1
ADDS = 30
IMAGES = ("beach.jpg", "city.png", "forest.jpg", "harbour.webp")
IMAGE_WIDTH = 640
CHARGE = 42
REMINDER_TO = "ops@example.com"
REMINDER_COUNTDOWN_S = 2.0
HEARTBEATS = 2
#: The worker runs on this host and reads the same clock: this allows for rounding only.
CLOCK_SLACK_S = 0.05
#: Brokers that store results too; for the others (RabbitMQ) results go to the demo's SQLite file.
_RESULT_SCHEMES = frozenset({"redis", "rediss", "unix", "sqlite"})


@dataclass(frozen=True)
class Connection:
    """Where the demo's queues and results live."""

    broker: str
    backend: str
    what: str


def choose_connection(environ: Mapping[str, str], workdir: Path) -> Connection:
    """The embedded SQLite file in ``workdir``, unless ``TASKFLEET_BROKER_URL`` names a broker."""
    sqlite = f"sqlite:///{workdir / 'taskfleet.db'}"  # workdir is absolute: sqlite:////tmp/...
    url = environ.get(ENV_BROKER_URL)
    if not url:
        return Connection(sqlite, sqlite, "the embedded SQLite broker, a fresh file")
    scheme = url_scheme(url)
    backend = environ.get(ENV_RESULT_BACKEND) or (url if scheme in _RESULT_SCHEMES else sqlite)
    return Connection(url, backend, f"{scheme}, from {ENV_BROKER_URL}")


@dataclass
class Item:
    """One sent task and what it should return."""

    result: AsyncResult
    expected: object
    sent_at: float  # Unix seconds
    state: State = State.PENDING
    value: object = None
    seen_at: float | None = None  # Unix seconds when the demo saw it finished


def _equal(item: Item) -> bool:
    return item.state is State.SUCCESS and item.value == item.expected


@dataclass
class Group:
    """A row of the summary: tasks of one kind, how many must finish, and how each is judged."""

    label: str
    want: int
    items: list[Item]
    describe: Callable[[Group], str]
    judge: Callable[[Item], bool] = _equal
    #: The items are candidates, not all sent (beat's ticks): an unfinished one is no failure.
    candidates: bool = False

    @property
    def finished(self) -> list[Item]:
        return [i for i in self.items if i.state in READY_STATES]

    @property
    def complete(self) -> bool:
        return len(self.finished) >= self.want

    @property
    def right(self) -> int:
        """Finished items judged right, at most ``want``."""
        return min(self.want, sum(self.judge(i) for i in self.finished))

    @property
    def passed(self) -> bool:
        return self.complete and all(self.judge(i) for i in self.finished)

    def states(self) -> str:
        """``SUCCESS`` when all share one state, else counts (``SUCCESS 29, PENDING 1``)."""
        counted = Counter(str(i.state) for i in (self.finished if self.candidates else self.items))
        if len(counted) == 1:
            return next(iter(counted))
        return ", ".join(f"{state} {n}" for state, n in counted.most_common()) or "-"

    def result(self) -> str:
        """What came back, with a mark: ✓ as expected, ✗ with the first difference."""
        wrong = [i for i in self.finished if not self.judge(i)]
        if wrong:
            return f"✗ got {wrong[0].value!r}, expected {wrong[0].expected!r}"
        if not self.complete:
            return f"✗ {len(self.finished)} of {self.want} finished"
        return f"✓ {self.describe(self)}"

    def done_after_s(self, since: float) -> float | None:
        """Seconds from ``since`` until the demo saw the group's last task finish (None: never)."""
        seen = [i.seen_at for i in self.finished if i.seen_at is not None]
        return max(seen) - since if self.complete and seen else None


def send_batch() -> list[Group]:
    """Send the demo's tasks; one group per kind."""
    now = time.time()
    adds = [Item(demo_tasks.add.delay(i, 2 * i), 3 * i, now) for i in range(ADDS)]
    images = [Item(demo_tasks.resize_image.delay(name, IMAGE_WIDTH), resized(name), now) for name in IMAGES]
    charge = Item(demo_tasks.flaky_charge.delay(CHARGE), f"charged {CHARGE} after 1 retry", now)
    sent_at = time.time()
    reminder = Item(demo_tasks.send_reminder.apply_async((REMINDER_TO,), countdown=REMINDER_COUNTDOWN_S),
                    REMINDER_TO, sent_at)
    return [
        Group("add", ADDS, adds, lambda g: ", ".join(str(i.value) for i in g.items[:3]) + f" ... {g.items[-1].value}"),
        Group("resize_image", len(IMAGES), images, lambda g: f"{g.items[0].value}, ..."),
        Group("flaky_charge", 1, [charge], lambda g: repr(g.items[0].value)),
        Group("send_reminder", 1, [reminder], lambda g: f"ran {_waited(g.items[0]):.2f}s after sending",
              judge=_countdown_held),
    ]


def resized(name: str) -> str:
    stem, _, ext = name.rpartition(".")
    return f"{stem}-{IMAGE_WIDTH}w.{ext}"


def _countdown_held(item: Item) -> bool:
    value = item.value
    return (item.state is State.SUCCESS and isinstance(value, dict) and value.get("to") == item.expected
            and _waited(item) >= REMINDER_COUNTDOWN_S - CLOCK_SLACK_S)


def _waited(item: Item) -> float:
    ran_at = item.value.get("ran_at") if isinstance(item.value, dict) else None
    return float(ran_at) - item.sent_at if isinstance(ran_at, int | float) else float("nan")


class Heartbeats:
    """Finds the ticks beat sent. A tick's task id derives from its entry and scheduled time (the same on every
    beat replica), so the demo looks results up by id: one candidate per second since the worker started."""

    def __init__(self, started_at: float) -> None:
        self.entry = demo_tasks.heartbeat.name
        self.step_ms = round(demo_tasks.HEARTBEAT_EVERY_S * 1000)
        self.next_ms = (int(started_at * 1000) // self.step_ms + 1) * self.step_ms
        self.group = Group("heartbeat", HEARTBEATS, [], _ticks, candidates=True)

    def discover(self) -> None:
        while self.next_ms <= time.time() * 1000:
            result = demo_tasks.app.AsyncResult(tick_id(self.entry, self.next_ms))
            self.group.items.append(Item(result, "alive", self.next_ms / 1000))
            self.next_ms += self.step_ms


def _ticks(group: Group) -> str:
    scheduled = [time.strftime("%H:%M:%S", time.localtime(i.sent_at)) for i in group.finished]
    return f"ticks at {', '.join(scheduled)}"


def poll(groups: list[Group]) -> None:
    """Update every unfinished item from the result backend."""
    for group in groups:
        for item in group.items:
            if item.state in READY_STATES:
                continue
            item.state = item.result.state
            if item.state in READY_STATES:
                item.value = item.result.get(timeout=5, propagate=False)
                item.seen_at = time.time()


@contextlib.contextmanager
def progress_display(console: Console, groups: list[Group], began: float) -> Iterator[Callable[[], None]]:
    """Yields ``update()``: a live bar per group on a terminal; otherwise (CI logs) a plain line as each group
    completes."""
    if console.is_terminal:
        columns = (TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console) as bars:
            ids = {g.label: bars.add_task(g.label, total=g.want) for g in groups}

            def advance() -> None:
                for group in groups:
                    bars.update(ids[group.label], completed=min(len(group.finished), group.want))

            yield advance
        return
    reported: set[str] = set()

    def lines() -> None:
        for group in groups:
            if group.complete and group.label not in reported:
                reported.add(group.label)
                console.print(f"  {time.time() - began:4.1f}s  {group.label}: {len(group.finished)} done")

    yield lines


def wait_until_done(groups: list[Group], heartbeats: Heartbeats, worker: subprocess.Popen[bytes],
                    update: Callable[[], None], deadline: float) -> str | None:
    """Poll until every group is complete; the reason when it stopped short (worker died, deadline passed)."""
    while True:
        heartbeats.discover()
        poll(groups)
        update()
        if all(g.complete for g in groups):
            return None
        if worker.poll() is not None:
            return f"the worker exited early with code {worker.returncode}"
        if time.monotonic() >= deadline:
            return f"not every task finished within {DEADLINE_S:g}s"
        time.sleep(POLL_S)


def summary(groups: list[Group], began: float) -> Table:
    table = Table(title="Results", title_justify="left")
    table.add_column("task")
    table.add_column("count", justify="right")
    table.add_column("state")
    table.add_column("result / expected")
    table.add_column("done after", justify="right")
    for group in groups:
        done_after = group.done_after_s(began)
        table.add_row(group.label, str(len(group.finished)), group.states(), group.result(),
                      "-" if done_after is None else f"{done_after:.1f}s")
    return table


def start_worker(connection: Connection, log_path: Path) -> subprocess.Popen[bytes]:
    """The worker in its own session, so a Ctrl-C reaches only the demo, which then drains it with SIGTERM. URLs go
    through the environment, never the command line (``ps`` would show a password)."""
    env = {**os.environ, ENV_BROKER_URL: connection.broker, ENV_RESULT_BACKEND: connection.backend}
    with log_path.open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "taskfleet", *WORKER_ARGS], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop_worker(worker: subprocess.Popen[bytes]) -> tuple[int | None, float]:
    """SIGTERM (the graceful drain); the exit code (None: killed after ``STOP_TIMEOUT_S``) and the seconds taken."""
    began = time.monotonic()
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
    try:
        code: int | None = worker.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
        code = None
    return code, time.monotonic() - began


def run(console: Console, workdir: Path) -> bool:
    """The demo; True when everything ended as expected."""
    connection = choose_connection(os.environ, workdir)
    console.print("[bold]Taskfleet demo[/bold]: a worker with beat embedded, a batch of tasks, a graceful drain")
    console.print(f"  broker:  {mask_url(connection.broker)} ({connection.what})")
    same = connection.backend == connection.broker
    console.print(f"  results: {'the same' if same else mask_url(connection.backend)}")
    if not os.environ.get(ENV_BROKER_URL):
        console.print(f"  (set {ENV_BROKER_URL}=redis://... or amqp://... to run it on Redis or RabbitMQ)")
    demo_tasks.app.configure(broker=connection.broker, result_backend=connection.backend)
    log_path = workdir / "worker.log"
    began = time.time()
    worker = start_worker(connection, log_path)
    console.print(f"  worker:  taskfleet {' '.join(WORKER_ARGS)} (pid {worker.pid})")
    try:
        groups = send_batch()
        heartbeats = Heartbeats(began)
        groups.append(heartbeats.group)
        console.print(f"sent {ADDS} add, {len(IMAGES)} resize_image, 1 flaky_charge (fails once), 1 send_reminder "
                      f"(countdown {REMINDER_COUNTDOWN_S:g}s); waiting for them and {HEARTBEATS} heartbeats from "
                      f"beat (every {demo_tasks.HEARTBEAT_EVERY_S:g}s)")
        with progress_display(console, groups, began) as update:
            problem = wait_until_done(groups, heartbeats, worker, update, time.monotonic() + DEADLINE_S)
        elapsed = time.time() - began
    finally:
        code, drain_s = stop_worker(worker)
        demo_tasks.app.close()
    console.print(summary(groups, began))
    expected, right = sum(g.want for g in groups), sum(g.right for g in groups)
    graceful = drain_s < DRAIN_TIMEOUT_S
    stopped = f"exited with code {code}" if code is not None else f"was killed after {STOP_TIMEOUT_S:g}s"
    console.print(f"{right}/{expected} tasks as expected in {elapsed:.1f}s; worker drained on SIGTERM in "
                  f"{drain_s:.1f}s and {stopped}")
    if not graceful:
        problem = problem or f"the drain took the whole --drain-timeout ({DRAIN_TIMEOUT_S}s): children were killed"
    log = log_path.read_text(errors="replace").strip().splitlines()
    if log:
        console.print("worker log (warnings and errors):", *log[-20:], sep="\n  ", markup=False)
    if problem:
        console.print(f"[red]problem:[/red] {problem}")
    return problem is None and right == expected and all(g.passed for g in groups) and code == 0 and graceful


def main() -> int:
    console = Console(highlight=False, soft_wrap=True)  # long lines stay whole in CI logs; tables fit the width
    workdir = Path(tempfile.mkdtemp(prefix="taskfleet-demo-"))
    if run(console, workdir):
        shutil.rmtree(workdir, ignore_errors=True)
        console.print("[green]demo passed[/green]")
        return 0
    console.print(f"[red]demo FAILED[/red] (kept {workdir}: worker.log and the SQLite file, if any)")
    return 1


if __name__ == "__main__":
    sys.exit(main())
