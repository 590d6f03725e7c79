"""Drive the Flask app with its test client (no server needed): POST a greeting, poll its task until a worker ran it,
then call the task directly. Run `taskfleet worker -A worker:app` first."""

from __future__ import annotations

import sys
import time

from web import create_app
from web.tasks import greet

TIMEOUT_S = 20.0


def main() -> int:
    client = create_app().test_client()

    sent = client.post("/greet/Ada")
    task_id = sent.get_json()["task_id"]
    print(f"POST /greet/Ada       -> {sent.status_code}, task id {task_id[:8]}...")

    deadline = time.monotonic() + TIMEOUT_S
    status = client.get(f"/tasks/{task_id}").get_json()
    while "result" not in status:
        if time.monotonic() > deadline:
            print(f"no result within {TIMEOUT_S:.0f} s: is `taskfleet worker -A worker:app` running?")
            return 1
        time.sleep(0.1)
        status = client.get(f"/tasks/{task_id}").get_json()
    print(f"GET  /tasks/<task id> -> {status['state']} {status['result']!r}")

    print(f"greet('Grace')        -> {greet('Grace')!r}  (a direct call, here, in the app context too)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
