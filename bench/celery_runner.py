"""Celery's side of the benchmark: the ``System`` adapter over ``bench/apps/celery_app.py``. Runs on .bench-venv.

Batch sends use Celery's batch API, ``group(...).apply_async()`` (one producer, one publish per message). The
result-storing tasks are pre-enqueued through a backend-less copy of the app: with a Redis result backend, sending
a result task from the app subscribes the producer to that task's result channel, and 20,000 idle subscriptions
would load the server during the drain that follows (a producer cost, not a worker's).
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

CONCURRENCY = 2
#: Worker flags: prefork (Celery's default pool), -O default (fair only helps long tasks), and no gossip, mingle or
#: heartbeat (broker chatter between workers, useless with one worker).
WORKER_FLAGS = ("-P", "prefork", "-O", "default", "--without-gossip", "--without-mingle", "--without-heartbeat")
#: kombu's Redis transport keeps delivered-but-unacked messages in this hash.
REDIS_UNACKED_KEY = "unacked"


class CelerySystem:
    name = "celery"

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.env = {"BENCH_BROKER_URL": args.broker_url, "BENCH_BACKEND_URL": args.backend_url,
                    "BENCH_CELERY_PREFETCH": str(args.prefetch_multiplier),
                    "BENCH_PEER_CONFIRMS": "1" if args.confirms else "0"}
        os.environ.update(self.env)  # celery_app reads them at import, here and in the worker
        self.mod: ModuleType = importlib.import_module("celery_app")
        from celery import Celery

        self.producer_app = Celery("bench-producer", broker=args.broker_url)
        self.producer_app.conf.update(self.mod.SETTINGS)
        self.redis = RedisProbe(args.broker_url) if args.broker == "redis" else None
        self.amqp = AmqpProbe(args.broker_url) if args.broker == "rabbitmq" else None

    def settings(self) -> dict[str, Any]:
        return {
            "worker": f"celery worker -c {CONCURRENCY} {' '.join(WORKER_FLAGS)}",
            **{k: v for k, v in self.mod.SETTINGS.items() if k not in ("task_default_queue", "accept_content")},
            "acks": "before the task runs (task_acks_late=False, Celery's default: at-most-once)",
            "publisher_confirms": bool(self.args.confirms) if self.args.broker == "rabbitmq" else None,
            "result_backend": "redis",
            "batch_api": "group(...).apply_async()",
        }

    def send(self, kind: Kind) -> None:
        self._task(kind).delay(*task_args(kind))

    def send_batch(self, kind: Kind, count: int) -> None:
        from celery import group

        if kind == "result":
            name = self._task(kind).name
            with self.producer_app.producer_or_acquire() as producer:
                for _ in range(count):
                    self.producer_app.send_task(name, producer=producer)
            return
        task = self._task(kind)
        group(task.s(*task_args(kind)) for _ in range(count)).apply_async()

    def depth(self) -> Depth:
        if self.redis is not None:
            ready, unacked = self.redis.lengths(lists=[QUEUE], hashes=[REDIS_UNACKED_KEY])
            return Depth(ready=ready, outstanding=ready + unacked)
        assert self.amqp is not None
        ready = self.amqp.ready(QUEUE)
        return Depth(ready=ready, outstanding=ready)

    def purge(self) -> None:
        with self.mod.app.connection_for_write() as connection:
            connection.default_channel.queue_purge(QUEUE)

    def worker_command(self) -> tuple[list[str], dict[str, str]]:
        command = [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "-c", str(CONCURRENCY),
                   *WORKER_FLAGS, "-Q", QUEUE, "-l", "WARNING", "-n", "bench@%h"]
        return command, worker_env(self.env)

    def async_worker_command(self) -> tuple[list[str], dict[str, str]]:
        """The async scenario's worker: the same pool as every scenario's, running the blocking-sleep task."""
        return self.worker_command()

    def round_trip(self, timeout_s: float) -> None:
        self.mod.noop_result.delay().get(timeout=timeout_s)

    def chord(self, size: int, timeout_s: float) -> int:
        from celery import chord

        header = [self.mod.noop_result.s() for _ in range(size)]
        return int(chord(header)(self.mod.count.s()).get(timeout=timeout_s))

    def chain(self, length: int, timeout_s: float) -> int:
        from celery import chain

        steps = [self.mod.add_one.s(0), *(self.mod.add_one.s() for _ in range(length - 1))]
        return int(chain(*steps).apply_async().get(timeout=timeout_s))

    def close(self) -> None:
        for probe in (self.redis, self.amqp):
            if probe is not None:
                probe.close()
        self.mod.app.close()
        self.producer_app.close()

    def _task(self, kind: Kind) -> Any:
        return {"noop": self.mod.noop, "payload": self.mod.payload, "result": self.mod.noop_result,
                "io": self.mod.io_sleep}[kind]



def main() -> None:
    parser = runner_parser(__doc__ or "")
    parser.add_argument("--prefetch-multiplier", type=int, default=64)
    parser.add_argument("--confirms", action="store_true", help="publisher confirms on RabbitMQ")
    runner_main(parser, CelerySystem)


if __name__ == "__main__":
    main()
