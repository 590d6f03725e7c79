"""Beat integration helpers: an app with a 1-second schedule under each catch-up policy, and ``taskfleet beat``
run as a real subprocess whose JSON log lines tests read."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from taskfleet import App
from taskfleet.brokers.base import Broker
from taskfleet.message import Message
from taskfleet.worker.beat import ENTRY_HEADER, SCHEDULED_HEADER
from tests.support.servers import free_port
from tests.support.waiting import wait_for
from tests.support.workers import json_lines, terminate

QUEUE = "beat"
app = App("beat-tests", default_queue=QUEUE)


@app.task
def tick() -> None:
    """Never run by these tests: beat only enqueues."""


app.add_periodic_task(1.0, tick.s(), name="every-1s-last")
app.add_periodic_task(1.0, tick.s(), name="every-1s-all", catch_up="all")
app.add_periodic_task(1.0, tick.s(), name="every-1s-none", catch_up="none")


class BeatProcess:
    """One ``taskfleet beat -A tests.support.beat:app`` process."""

    def __init__(self, *, broker: str, lease_s: float) -> None:
        self.health_port = free_port()
        self.log_path = Path(tempfile.mkstemp(prefix="taskfleet-beat-", suffix=".log")[1])
        cmd = [sys.executable, "-m", "taskfleet", "beat", "-A", "tests.support.beat:app", "--broker", broker,
               "--beat-lease", str(lease_s), "--log-format", "json", "-l", "info", "--health-host", "127.0.0.1",
               "--health-port", str(self.health_port)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKFLEET_")}
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env={**env,
                                     "PYTHONUNBUFFERED": "1"}, cwd=Path(__file__).resolve().parents[2])

    def events(self) -> list[dict[str, Any]]:
        return json_lines(self.log_path, raw_key="event")

    def said(self, event: str) -> int:
        """How many times this process logged ``event``."""
        return sum(1 for e in self.events() if e.get("event") == event)

    @property
    def leads(self) -> bool:
        return self.said("beat leads") > self.said("beat no longer leads")

    def wait_running(self, timeout: float = 15.0) -> BeatProcess:
        wait_for(lambda: self.proc.poll() is not None or self.said("beat starting") > 0, timeout,
                 message="beat did not start")
        assert self.proc.poll() is None, f"beat exited early:\n{self.log_path.read_text()}"
        return self

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def stop(self) -> None:
        terminate(self.proc, 15.0)
        self._log.close()


def drain_ticks(broker: Broker) -> list[Message]:
    """Every tick message waiting in the beat queue (taken out and acked)."""
    found: list[Message] = []
    while True:
        batch = broker.fetch([QUEUE], max_messages=500, timeout_s=1.0)
        if not batch:
            return found
        found += [Message.decode(d.data, accept=frozenset({"json"})) for d in batch]
        broker.ack(batch)


def scheduled_s(message: Message) -> float:
    """The tick's scheduled time (Unix seconds) from its header."""
    from datetime import datetime

    return datetime.fromisoformat(str(message.headers[SCHEDULED_HEADER])).timestamp()


def entry_of(message: Message) -> str:
    return str(message.headers[ENTRY_HEADER])


def now() -> float:
    return time.time()
