"""``make demo``: Taskfleet's main job end to end on this machine.

Starts a private redis-server (installed with apt when missing and root) on a free port, a prefork worker with two
children, sends a batch of tasks (one retried, one with a countdown), prints the results, and drains the worker with
SIGTERM. Exit code 0 only when every task ended as expected. Set TASKFLEET_BROKER_URL to use your own Redis instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from examples import demo_tasks
from tests.support.servers import RedisServer

ROOT = Path(__file__).resolve().parents[1]


def run(broker: str, backend: str) -> int:
    demo_tasks.app.configure(broker=broker, result_backend=backend)
    worker = subprocess.Popen(
        [sys.executable, "-m", "taskfleet", "worker", "-A", "examples.demo_tasks:app", "-c", "2", "--broker", broker,
         "--result-backend", backend, "--log-format", "console", "-l", "warning", "--health-port", "0"],
        cwd=ROOT,
    )
    try:
        began = time.perf_counter()
        adds = [demo_tasks.add.delay(i, i) for i in range(20)]
        charge = demo_tasks.flaky_charge.delay(42)
        later = demo_tasks.reminder.apply_async(args=("ops@example.com",), countdown=2)
        checks = [
            ("20 x add", [r.get(timeout=30) for r in adds], [i + i for i in range(20)]),
            ("flaky_charge (retried once)", charge.get(timeout=30), "charged 42 after 1 retry"),
            ("reminder (countdown 2 s)", later.get(timeout=30), "reminded ops@example.com"),
        ]
        elapsed = time.perf_counter() - began
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=60)
    ok = True
    print(f"\n{'task':<32} {'result':<40} ok")
    for name, got, want in checks:
        shown = f"{got[:3]}... ({len(got)} results)" if isinstance(got, list) else repr(got)
        print(f"{name:<32} {shown:<40} {'yes' if got == want else 'NO'}")
        ok &= got == want
    print(f"\nall tasks done in {elapsed:.2f}s; worker drained with exit code {code}")
    return 0 if ok and code == 0 else 1


def main() -> int:
    url = os.environ.get("TASKFLEET_BROKER_URL")
    if url:
        return run(url, os.environ.get("TASKFLEET_RESULT_BACKEND", url))
    with RedisServer() as server:
        print(f"private redis-server on {server.url}")
        return run(f"{server.url}/0", f"{server.url}/1")


if __name__ == "__main__":
    sys.exit(main())
