"""Send one task of each kind and print how each ended: `python send.py` (with `taskfleet worker -A tasks:app -c 2`
running in this directory)."""

from __future__ import annotations

import os

from tasks import app, build_thumbnails, call_stuck_api, fetch_rates, sync_inventory

from taskfleet import AsyncResult, settings_from_env

TIMEOUT_S = 30.0


def show(call: str, result: AsyncResult) -> None:
    outcome = result.get(timeout=TIMEOUT_S, propagate=False)  # the exception itself when the task failed
    shown = f"{type(outcome).__name__}: {outcome}" if isinstance(outcome, BaseException) else repr(outcome)
    print(f"{call:<26} {result.state:<8} {shown}")


def main() -> None:
    app.configure(**settings_from_env(os.environ))
    sent = [
        ("fetch_rates('EUR')", fetch_rates.delay("EUR")),
        ("sync_inventory('berlin')", sync_inventory.delay("berlin")),
        ("build_thumbnails(20)", build_thumbnails.delay(20)),
        ("call_stuck_api()", call_stuck_api.delay()),
    ]
    for call, result in sent:
        show(call, result)


if __name__ == "__main__":
    main()
