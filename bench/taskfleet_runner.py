"""Taskfleet's side of the benchmark: the ``System`` adapter over ``bench/apps/taskfleet_app.py``. Runs on .venv.

The batch scenario sends through ``app.send_many`` (which hands the broker chunks of ``SEND_MANY_CHUNK`` messages
through ``enqueue_many``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import taskfleet_app

from bench.measure import Depth
from bench.scenarios import QUEUE, Kind, runner_main, runner_parser, task_args, worker_env
from taskfleet.producer import SEND_MANY_CHUNK
from taskfleet.worker.settings import default_prefetch

CONCURRENCY = 2

_TASKS = {"noop": taskfleet_app.noop, "payload": taskfleet_app.payload, "result": taskfleet_app.noop_result,
          "io": taskfleet_app.io_sleep}



class TaskfleetSystem:
    name = "taskfleet"

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.app = taskfleet_app.app
        self.app.configure(broker=args.broker_url, result_backend=args.backend_url)
        #: --prefetch, else the worker's own default for this broker (docs/configuration.md).
        self.prefetch: int = args.prefetch if args.prefetch is not None else default_prefetch(args.broker_url)

    def settings(self) -> dict[str, Any]:
        return {
            "worker": f"taskfleet worker -c {CONCURRENCY} --prefetch {self.prefetch} (health server on)",
            "prefetch_per_child": self.prefetch,
            "acks": "after the task runs (at-least-once)",
            "publisher_confirms": "windowed (delay), awaited (batch API)" if self.args.broker == "rabbitmq" else None,
            "result_backend": "sqlite (same file)" if self.args.broker == "sqlite" else "redis",
            "track_started": taskfleet_app.noop_result.options.track_started,
            "serializer": "json",
            "batch_api": f"app.send_many (broker.enqueue_many in chunks of {SEND_MANY_CHUNK})",
            "async_worker": f"taskfleet worker -c {CONCURRENCY} (its default --async-concurrency and prefetch)",
        }

    def send(self, kind: Kind) -> None:
        _TASKS[kind].delay(*task_args(kind))

    def send_batch(self, kind: Kind, count: int) -> None:
        task, args = _TASKS[kind], task_args(kind)
        self.app.send_many([task.s(*args) for _ in range(count)], queue=QUEUE)

    def depth(self) -> Depth:
        depth = self.app.broker.queue_depth(QUEUE)
        return Depth(ready=depth.ready, outstanding=depth.total if depth.in_flight_known else depth.ready)

    def purge(self) -> None:
        self.app.broker.purge(QUEUE)

    def worker_command(self, *, prefetch: bool = True) -> tuple[list[str], dict[str, str]]:
        command = [
            sys.executable, "-P", "-m", "taskfleet", "worker", "-A", "taskfleet_app:app", "-Q", QUEUE,
            "-c", str(CONCURRENCY), *(("--prefetch", str(self.prefetch)) if prefetch else ()),
            "--broker", self.args.broker_url, "--result-backend", self.args.backend_url, "-l", "warning",
            "--log-format", "json", "--health-host", "127.0.0.1", "--health-port", "0",
        ]
        return command, worker_env({})

    def async_worker_command(self) -> tuple[list[str], dict[str, str]]:
        """The async scenario's worker: ``-c 2`` with the worker's own defaults for everything else (prefetch and
        ``--async-concurrency`` included, which the worker may size together)."""
        return self.worker_command(prefetch=False)

    def events_worker_command(self) -> tuple[list[str], dict[str, str]]:
        """The worker of ``worker_command`` with task events on (``-E``): the events-cost scenario."""
        command, env = self.worker_command()
        return [*command, "-E"], env

    def round_trip(self, timeout_s: float) -> None:
        taskfleet_app.noop_result.delay().get(timeout=timeout_s)

    def chord(self, size: int, timeout_s: float) -> int:
        from taskfleet import chord

        header = [taskfleet_app.noop_result.s() for _ in range(size)]
        return int(chord(header)(taskfleet_app.count.s()).get(timeout=timeout_s))

    def chain(self, length: int, timeout_s: float) -> int:
        from taskfleet import chain

        steps = [taskfleet_app.add_one.s(0), *(taskfleet_app.add_one.s() for _ in range(length - 1))]
        return int(chain(*steps).apply_async().get(timeout=timeout_s))

    def close(self) -> None:
        self.app.close()


def main() -> None:
    parser = runner_parser(__doc__ or "")
    parser.add_argument("--prefetch", type=int, default=None,
                        help="worker --prefetch (default: the worker's default for the broker)")
    runner_main(parser, TaskfleetSystem)


if __name__ == "__main__":
    main()
