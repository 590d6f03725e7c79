"""Dramatiq's benchmark actors and broker (runs on .bench-venv). The worker is ``dramatiq dramatiq_app -p 2 -t 8``;
URLs come from the environment the runner sets (BENCH_*), because Dramatiq's CLI imports this module.

Dramatiq's defaults are its throughput settings: 8 threads per process, a queue prefetch of 2 x threads, the default
middleware (age and time limits, retries, callbacks, pipelines, shutdown notifications) plus ``Results`` on Redis
for the result-storing actor.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend
from io_work import blocking_io_then_count

QUEUE = "bench"
BROKER_URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0")
#: Publisher confirms on RabbitMQ (``confirm_delivery``): off by default, like Dramatiq's; BENCH_PEER_CONFIRMS=1
#: turns them on to compare against Taskfleet's always-confirmed publishes.
CONFIRMS = os.environ.get("BENCH_PEER_CONFIRMS") == "1"

if BROKER_URL.startswith("amqp"):
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    broker: dramatiq.Broker = RabbitmqBroker(url=BROKER_URL, confirm_delivery=CONFIRMS)
else:
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=BROKER_URL)
result_backend = RedisBackend(url=os.environ.get("BENCH_BACKEND_URL", "redis://127.0.0.1:6379/1"))
broker.add_middleware(Results(backend=result_backend))
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE)
def noop() -> None:
    return None


@dramatiq.actor(queue_name=QUEUE)
def payload(blob: str) -> None:
    return None


@dramatiq.actor(queue_name=QUEUE, store_results=True)
def noop_result() -> None:
    return None



@dramatiq.actor(queue_name=QUEUE)
def io_sleep() -> None:
    """The async scenario: 100 ms of simulated I/O the way this pool runs it (a blocking sleep), then one INCR of
    the finish counter (``BENCH_COUNTER_URL``)."""
    blocking_io_then_count()
