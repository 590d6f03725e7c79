"""Dramatiq's side of the benchmark: the ``System`` adapter over ``bench/apps/dramatiq_app.py``. Runs on
.bench-venv.

Dramatiq has no pipelined send: its batch API, ``group([...]).run()``, enqueues the messages one by one.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from types import ModuleType
from typing import Any

from bench.measure import AmqpProbe, Depth, RedisProbe
from bench.scenarios import QUEUE, Kind, runner_main, runner_parser, task_args, worker_env

PROCESSES = 2
THREADS = 8
#: Dramatiq's Redis broker: ready message ids in a list; every message not yet acked (ready or fetched) in a hash.
REDIS_READY_KEY = f"dramatiq:{QUEUE}"
REDIS_MESSAGES_KEY = f"dramatiq:{QUEUE}.msgs"


class DramatiqSystem:
    name = "dramatiq"

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.env = {"BENCH_BROKER_URL": args.broker_url, "BENCH_BACKEND_URL": args.backend_url,
                    "BENCH_PEER_CONFIRMS": "1" if args.confirms else "0"}
        os.environ.update(self.env)  # dramatiq_app reads them at import, here and in the worker
        self.mod: ModuleType = importlib.import_module("dramatiq_app")
        self.redis = RedisProbe(args.broker_url) if args.broker == "redis" else None
        self.amqp = AmqpProbe(args.broker_url) if args.broker == "rabbitmq" else None

    def settings(self) -> dict[str, Any]:
        return {
            "worker": f"dramatiq -p {PROCESSES} -t {THREADS}",
            "queue_prefetch_per_process": 2 * THREADS,
            "middleware": "default + Results(RedisBackend)",
            "acks": "after the task runs (at-least-once)",
            "publisher_confirms": bool(self.args.confirms) if self.args.broker == "rabbitmq" else None,
            "result_backend": "redis",
            "batch_api": "group([...]).run() (one enqueue per message)",
        }

    def send(self, kind: Kind) -> None:
        self._actor(kind).send(*task_args(kind))

    def send_batch(self, kind: Kind, count: int) -> None:
        import dramatiq

        actor = self._actor(kind)
        dramatiq.group([actor.message(*task_args(kind)) for _ in range(count)]).run()

    def depth(self) -> Depth:
        if self.redis is not None:
            ready, unacked = self.redis.lengths(lists=[REDIS_READY_KEY], hashes=[REDIS_MESSAGES_KEY])
            return Depth(ready=ready, outstanding=unacked)
        assert self.amqp is not None
        ready = self.amqp.ready(QUEUE)
        return Depth(ready=ready, outstanding=ready)

    def purge(self) -> None:
        self.mod.broker.flush(QUEUE)

    def worker_command(self) -> tuple[list[str], dict[str, str]]:
        # cwd is bench/apps, which is also Dramatiq's default --path (".").
        command = [sys.executable, "-m", "dramatiq", "dramatiq_app", "-p", str(PROCESSES), "-t", str(THREADS),
                   "-Q", QUEUE]
        return command, worker_env(self.env)

    def async_worker_command(self) -> tuple[list[str], dict[str, str]]:
        """The async scenario's worker: the same pool as every scenario's, running the blocking-sleep task."""
        return self.worker_command()

    def round_trip(self, timeout_s: float) -> None:
        self.mod.noop_result.send().get_result(block=True, timeout=int(timeout_s * 1000))

    def close(self) -> None:
        for probe in (self.redis, self.amqp):
            if probe is not None:
                probe.close()
        self.mod.broker.close()

    def _actor(self, kind: Kind) -> Any:
        return {"noop": self.mod.noop, "payload": self.mod.payload, "result": self.mod.noop_result,
                "io": self.mod.io_sleep}[kind]


def main() -> None:
    parser = runner_parser(__doc__ or "")
    parser.add_argument("--confirms", action="store_true", help="publisher confirms on RabbitMQ")
    runner_main(parser, DramatiqSystem)


if __name__ == "__main__":
    main()
