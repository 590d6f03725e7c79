"""Run one of each workflow and print what came back: `python send.py` (with `taskfleet worker -A tasks:app`
running in this directory)."""

from __future__ import annotations

import os
import time
from typing import Any

from tasks import EVENTS_FILE, add, app, check_stock, import_rows, log_error, log_result, mul, total

from taskfleet import chord, group, settings_from_env

TIMEOUT_S = 20.0


def show(call: str, value: object) -> None:
    print(f"{call:<50} -> {value}")


def next_event(seen: int) -> str:
    """Line ``seen`` of the events file once it is written (a callback or an errback is a task: it runs just after
    the task it is linked to)."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        lines = EVENTS_FILE.read_text(encoding="utf-8").splitlines() if EVENTS_FILE.exists() else []
        if len(lines) > seen:
            return lines[seen]
        time.sleep(0.05)
    return "(nothing)"


def main() -> None:
    app.configure(**settings_from_env(os.environ))  # TASKFLEET_BROKER_URL, as the worker reads it
    EVENTS_FILE.unlink(missing_ok=True)

    # chain: each task gets the previous result as its first argument
    result = (add.s(2, 2) | mul.s(10) | add.s(1)).apply_async()
    show("add.s(2, 2) | mul.s(10) | add.s(1)", result.get(timeout=TIMEOUT_S))
    show("  .parent.get(), .parent.parent.get()", (result.parent.get(timeout=TIMEOUT_S),
                                                   result.parent.parent.get(timeout=TIMEOUT_S)))

    # group: in parallel, results in the group's order
    show("group(add.s(i, i) for i in range(5))", group(add.s(i, i) for i in range(5)).apply_async()
         .get(timeout=TIMEOUT_S))

    # chord: the body runs once, after the whole header, with the header's results
    show("chord(mul.s(i, i) for i in range(10))(total.s())", chord(mul.s(i, i) for i in range(10))(total.s())
         .get(timeout=TIMEOUT_S))

    # map, starmap and chunks: many calls in one message (map, starmap) or a few (chunks)
    show("add.starmap([(1, 2), (3, 4)])", add.starmap([(1, 2), (3, 4)]).delay().get(timeout=TIMEOUT_S))
    show("add.chunks(zip(range(6), range(6)), 2)", add.chunks(zip(range(6), range(6), strict=True), 2).group()
         .apply_async().get(timeout=TIMEOUT_S))

    # a callback gets the result; an errback runs once when a task or workflow fails
    linked = add.apply_async((1, 1), link=log_result.s())
    show("add.apply_async((1, 1), link=log_result.s())", linked.get(timeout=TIMEOUT_S))
    print(f"  {next_event(0)}")
    failing = (check_stock.s("plum") | add.s(1)).on_error(log_error.s()).apply_async()
    try:
        failing.get(timeout=TIMEOUT_S)
    except KeyError as exc:
        show("(check_stock.s('plum') | add.s(1)).get()", f"raises KeyError: {exc}")
    print(f"  {next_event(1)}")

    # progress: every state update is pushed to the caller, then the result
    updates: list[str] = []

    def on_message(update: dict[str, Any]) -> None:
        if update["status"] == "PROGRESS":
            updates.append(f"{update['result']['done']}/{update['result']['total']}")

    rows = import_rows.delay(3).get(timeout=TIMEOUT_S, on_message=on_message)
    show("import_rows.delay(3).get(on_message=...)", f"{rows} rows; progress seen: {', '.join(updates)}")


if __name__ == "__main__":
    main()
