"""Wait for the next three heartbeats the worker records in ticks.log and check each tick came once:
`python watch.py` (with `taskfleet worker -A tasks:app --beat` running in this directory)."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from itertools import pairwise

from tasks import TICKS

WANT = 3
TIMEOUT_S = 15.0


def recorded() -> list[str]:
    return TICKS.read_text(encoding="utf-8").splitlines() if TICKS.exists() else []


def main() -> int:
    already = len(recorded())
    deadline = time.monotonic() + TIMEOUT_S
    while len(recorded()) - already < WANT:
        if time.monotonic() > deadline:
            print(f"fewer than {WANT} heartbeats within {TIMEOUT_S:g}s: is `taskfleet worker --beat` running here?")
            return 1
        time.sleep(0.1)
    ticks = recorded()[already:]
    for tick in ticks:
        print(f"heartbeat for the tick scheduled at {tick}")
    times = [datetime.fromisoformat(t).timestamp() for t in ticks]
    gaps = {round(b - a, 3) for a, b in pairwise(times)}
    once = len(set(ticks)) == len(ticks)
    print(f"{len(ticks)} ticks, {' / '.join(f'{g:g}' for g in sorted(gaps))} s apart, "
          f"{'each sent once' if once else 'SOME SENT TWICE'}")
    return 0 if once else 1


if __name__ == "__main__":
    sys.exit(main())
