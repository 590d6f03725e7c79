"""Show routing (each queue's tasks run on the worker that consumes it) and priorities (an urgent report overtakes
the ones queued before it): `python send.py`, with a worker for each queue running in this directory."""

from __future__ import annotations

import os
import time
from typing import Any

from tasks import app, build_report, send_email

from taskfleet import AsyncResult, State, settings_from_env

TIMEOUT_S = 15.0
#: Long enough to queue the other reports behind it while it runs.
SLOW_REPORT_S = 1.0


def values(results: list[AsyncResult]) -> list[dict[str, Any]]:
    return [r.get(timeout=TIMEOUT_S) for r in results]


def wait_started(result: AsyncResult) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while result.state is State.PENDING:
        if time.monotonic() > deadline:
            raise TimeoutError("the reports worker never started the slow report: is it running (-Q reports)?")
        time.sleep(0.02)


def main() -> None:
    app.configure(**settings_from_env(os.environ))

    print("routing: each task runs on a worker that consumes its queue")
    emails = values([send_email.delay(f"{name}@example.com") for name in ("ann", "bob", "eve")])
    reports = values([build_report.delay(name) for name in ("sales", "stock")])
    numbers: dict[int, int] = {}  # worker pid -> 1, 2, ... in order of appearance
    for call, value in [(f"send_email({v['to']!r})", v) for v in emails] + [
            (f"build_report({v['name']!r})", v) for v in reports]:
        number = numbers.setdefault(value["worker_pid"], len(numbers) + 1)
        print(f"  {call:<30} queue={value['queue']:<8} worker {number} (pid {value['worker_pid']})")
    for queue, ran in (("emails", emails), ("reports", reports)):
        print(f"  {queue} ran on worker {' and '.join(sorted({str(numbers[v['worker_pid']]) for v in ran}))} only")

    print("priorities: 4 reports at priority 0, then 1 at priority 9, while the reports worker is busy")
    slow = build_report.delay("slow", SLOW_REPORT_S)
    wait_started(slow)  # the one reports child is busy now: what follows waits in the queue
    queued = [build_report.delay(f"normal-{i}") for i in range(1, 5)]
    urgent = build_report.apply_async(("urgent",), priority=9)  # 0-9, higher first
    ran = sorted(values([slow, *queued, urgent]), key=lambda v: v["started"])
    print(f"  run order: {', '.join(v['name'] for v in ran)}")


if __name__ == "__main__":
    main()
