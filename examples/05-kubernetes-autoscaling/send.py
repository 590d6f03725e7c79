"""Send a burst of emails to the TaskQueue's workers: `TASKFLEET_BROKER_URL=redis://127.0.0.1:6379/0 python send.py`.

Sent by task name: the code runs in the worker image (deploy/examples/worker/tasks.py, app "examples"), so this
side needs no copy of it, only the broker URL. Nothing waits for results: the backlog is the point.
"""

from __future__ import annotations

import argparse
import os

from taskfleet import App, settings_from_env
from taskfleet.settings import ENV_BROKER_URL

TASK = "examples.send_email"
QUEUE = "emails"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("count", type=int, nargs="?", default=200, help="how many tasks to send (default 200)")
    count = parser.parse_args().count
    if not os.environ.get(ENV_BROKER_URL):
        parser.error(f"set {ENV_BROKER_URL}, e.g. redis://127.0.0.1:6379/0 through a kubectl port-forward")
    app = App("producer")
    app.configure(**settings_from_env(os.environ))
    # One burst: send_many stores every message in a few round trips, so the operator sees the whole backlog at once.
    app.send_many(((TASK, (f"user{i}@example.com",), {}) for i in range(count)), queue=QUEUE)
    print(f"sent {count} x {TASK} to queue {QUEUE}")


if __name__ == "__main__":
    main()
