"""Call the quickstart tasks and print their results: `python send.py` (with `taskfleet worker -A tasks:app`
running in this directory)."""

from __future__ import annotations

import os

from tasks import add, app, top_words

from taskfleet import settings_from_env

TIMEOUT_S = 10.0
TEXT = "The quick brown fox jumps over the lazy dog. The dog sleeps, the fox runs."


def show(call: str, value: object, note: str = "") -> None:
    print(f"{call:<31} -> {value}{f'  ({note})' if note else ''}")


def main() -> None:
    app.configure(**settings_from_env(os.environ))  # TASKFLEET_BROKER_URL, as the worker reads it

    result = add.delay(2, 3)  # returns once the broker has stored the message
    show("add.delay(2, 3)", result.get(timeout=TIMEOUT_S), f"task id {result.id[:8]}...")
    show("top_words.delay(TEXT)", top_words.delay(TEXT).get(timeout=TIMEOUT_S))
    # By name, without importing the task's code: what another service does.
    show("app.send('quickstart.add', ...)", app.send("quickstart.add", args=(40, 2)).get(timeout=TIMEOUT_S))
    results = [add.delay(i, i) for i in range(100)]
    show("100 x add.delay(i, i)", f"sum {sum(r.get(timeout=TIMEOUT_S) for r in results)}")
    show("add(1, 1)", add(1, 1), "a direct call runs here, not on the worker")


if __name__ == "__main__":
    main()
