"""How ``AsyncResult.get_async`` scales in one event loop: ``WAITS`` concurrent waits on the Redis and the SQLite
result backends (private servers, as the benchmark starts them); prints, per backend, the threads and Redis
connections the waits added, how long the loop went without running (a ticker coroutine every 10 ms), and the
latency from each result's store to its ``get_async`` returning.

    .venv/bin/python bench/run.py -m bench.get_async [--waits 500]

The results are stored from another thread, one every ``STORE_EVERY_S``, by a second backend client (as a worker
would), so each latency is measured against its own store.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.measure import latency_summary
from taskfleet import App
from taskfleet.backends import connect
from taskfleet.backends.base import ResultRecord
from taskfleet.settings import BackendSettings
from taskfleet.states import State
from tests.support.servers import RedisServer

WAITS = 500
#: Pace of the stores (seconds): 500 results over 0.5 s, a steady stream of completions rather than one burst.
STORE_EVERY_S = 0.001


def measure(url: str, waits: int, *, redis_client: Any = None) -> dict[str, Any]:
    """``waits`` concurrent ``get_async`` on the backend at ``url``; see the module docstring."""
    app = App("get-async-bench", result_backend=url)
    storer = connect(BackendSettings(url=url))
    ids = [uuid.uuid4().hex for _ in range(waits)]
    stored_at: dict[str, float] = {}

    def store_all() -> None:
        for task_id in ids:
            storer.store(ResultRecord(task_id=task_id, state=State.SUCCESS, result=task_id))
            stored_at[task_id] = time.perf_counter()
            time.sleep(STORE_EVERY_S)

    async def wait_one(task_id: str) -> float:
        assert await app.AsyncResult(task_id).get_async(timeout=60) == task_id
        return time.perf_counter()

    async def run() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        ticks: list[float] = []

        async def tick() -> None:
            while True:
                ticks.append(loop.time())
                await asyncio.sleep(0.01)

        threads_before = threading.active_count()
        clients_before = _clients(redis_client)
        ticker = asyncio.create_task(tick())
        pending = [asyncio.create_task(wait_one(task_id)) for task_id in ids]
        await asyncio.sleep(0.3)
        threads_added = threading.active_count() - threads_before
        clients_added = None if clients_before is None else _clients(redis_client) - clients_before
        storing = threading.Thread(target=store_all)
        storing.start()
        returned = await asyncio.gather(*pending)
        storing.join()
        ticker.cancel()
        latencies = [(end - stored_at[task_id]) * 1000 for task_id, end in zip(ids, returned, strict=True)]
        return {"waits": waits, "threads_added": threads_added, "redis_connections_added": clients_added,
                "longest_loop_gap_ms": round(max(b - a for a, b in itertools.pairwise(ticks)) * 1000, 1),
                "latency_ms": latency_summary(latencies)}

    try:
        return asyncio.run(run())
    finally:
        storer.close()
        app.close()


def _clients(client: Any) -> int | None:
    return None if client is None else len(client.client_list())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waits", type=int, default=WAITS)
    args = parser.parse_args()
    out: dict[str, Any] = {}
    with RedisServer() as server, tempfile.TemporaryDirectory(prefix="tf-get-async-") as tmp:
        import redis

        probe = redis.Redis.from_url(f"{server.url}/1")
        out["redis"] = measure(f"{server.url}/1", args.waits, redis_client=probe)
        probe.close()
        out["sqlite"] = measure(f"sqlite:///{Path(tmp) / 'results.db'}", args.waits)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
