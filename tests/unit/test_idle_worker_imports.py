"""Specification of what an idle worker does not load: every module a process imports stays in its memory, and
every module the supervisor holds when it forks is in each child's memory too (bench/ scenario 4 measures the
result; this file names the modules).

Each probe runs in a fresh interpreter and prints ``sys.modules``; no server is needed (a client library is imported
by loading the adapter class its URL names, ``taskfleet._connections.schemes.load``, as a worker does).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: redis-py 8 imports OpenTelemetry's metrics SDK (and the trace API with it) at import, only to annotate.
_OTEL_SDK = ("opentelemetry.sdk", "opentelemetry.trace")

_REDIS_ADAPTERS = ("taskfleet.brokers.redis:RedisBroker", "taskfleet.backends.redis:RedisBackend")

#: What a worker without ``-E`` loads only when asked: Celery's settings table and difflib (unknown settings in a
#: configuration, ``taskfleet check``), and the task events of ``-E``.
_ON_DEMAND = ("difflib", "taskfleet.celery_settings", "taskfleet.worker.task_events", "taskfleet.fleet.event_sink")

#: A supervisor that prints its modules where it would fork (no child starts; ``memory://`` needs no server).
_AT_FORK = """
from taskfleet.worker import supervisor, worker_command
supervisor.Supervisor.run = lambda self: 0
worker_command.resolve_health_port = lambda args, environ: None
from taskfleet.cli import main
try:
    main(["worker", "-A", "tests.tasks:app", "--broker", "memory://", "-c", "1", "--log-format", "json",
          "-l", "warning"])
except SystemExit as exit:
    assert exit.code == 0, exit.code
"""


#: What only the supervisor needs once its children run: the health server and the metrics it renders.
_SUPERVISOR_ONLY = ("prometheus_client", "http.server", "socketserver", "wsgiref", "taskfleet.worker.health")

#: A worker with a health port (any free one): the modules at its first fork, then those it holds once it serves.
_FIRST_FORK_WITH_HEALTH_PORT = """
from taskfleet.worker import supervisor
at_fork = []
supervisor.Supervisor._spawn = lambda self, slot: at_fork.append(set(sys.modules))
def tick(self):  # no child ran: stop at once, after the health server started
    assert self.metrics.render()[0].startswith(b"#"), "the health server serves prometheus metrics"
    self.draining = True
supervisor.Supervisor._tick = tick
from taskfleet.cli import main
try:
    main(["worker", "-A", "tests.tasks:app", "--broker", "memory://", "-c", "1", "--health-port", "0",
          "--log-format", "json", "-l", "warning"])
except SystemExit as exit:
    assert exit.code == 0, exit.code
print("\\n".join(f"at-fork:{m}" for m in sorted(at_fork[0])))
"""


def _run(code: str) -> set[str]:
    result = subprocess.run([sys.executable, "-c", f"import sys\n{code}\nprint('\\n'.join(sorted(sys.modules)))"],
                            cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def _loaded(modules: set[str], *names: str) -> list[str]:
    """The modules of ``modules`` that are one of ``names`` or inside one of them."""
    return sorted(m for m in modules if any(m == n or m.startswith(f"{n}.") for n in names))


def _load(path: str) -> str:
    return f"from taskfleet._connections import schemes\nschemes.load({path!r})"


@pytest.mark.parametrize("path", _REDIS_ADAPTERS, ids=["broker", "backend"])
def test_loading_a_redis_adapter_loads_neither_the_opentelemetry_sdk_nor_its_trace_api(path: str) -> None:
    modules = _run(_load(path))

    assert "redis" in modules
    assert _loaded(modules, *_OTEL_SDK) == []


def test_loading_the_rabbitmq_broker_does_not_load_an_http_client() -> None:
    # its management API client imports urllib.request (http.client, email) when it first asks
    modules = _run(_load("taskfleet.brokers.rabbitmq:RabbitMQBroker"))

    assert "pika" in modules
    assert _loaded(modules, "urllib.request", "http.client") == []


def test_an_app_that_sets_opentelemetry_up_after_the_broker_loaded_gets_the_sdk() -> None:
    # Given the Redis broker loaded (the SDK hidden meanwhile), when the app then imports the SDK
    modules = _run(f"{_load(_REDIS_ADAPTERS[0])}\nfrom opentelemetry.sdk.metrics import MeterProvider\n"
                   "assert MeterProvider is not None")

    assert "opentelemetry.sdk.metrics" in modules


def test_an_sdk_the_app_imported_first_is_left_to_redis() -> None:
    # Given the app set OpenTelemetry up first, when the Redis broker loads, then redis-py sees the SDK as usual
    _run("import opentelemetry.sdk.metrics as sdk\n"
         f"{_load(_REDIS_ADAPTERS[0])}\n"
         "assert sys.modules['opentelemetry.sdk.metrics'] is sdk\n"
         "try:\n    from redis.observability import providers\nexcept ImportError:  # before redis-py 8.2\n"
         "    providers = None\n"
         "assert providers is None or providers.OTEL_AVAILABLE")


def test_a_failed_adapter_import_leaves_the_hidden_modules_importable() -> None:
    _run("from taskfleet._connections import schemes\n"
         "try:\n    schemes.load('taskfleet.brokers.no_such_broker:Broker')\nexcept ImportError:\n    pass\n"
         "assert 'opentelemetry.sdk.metrics' not in sys.modules\n"
         "import opentelemetry.sdk.metrics")


def test_an_idle_worker_without_task_events_has_not_loaded_what_only_some_paths_use_when_it_forks() -> None:
    modules = _run(_AT_FORK)

    assert "taskfleet.worker.child" in modules
    assert _loaded(modules, *_ON_DEMAND) == []


def test_a_worker_serving_health_checks_forks_its_first_children_before_it_loads_the_server_and_prometheus() -> None:
    # Given a worker with a health port, when it forks its first child, then the child gets neither the health
    # server nor prometheus_client; the supervisor loads them right after, to serve
    modules = _run(_FIRST_FORK_WITH_HEALTH_PORT)
    at_fork = {m.removeprefix("at-fork:") for m in modules if m.startswith("at-fork:")}

    assert "taskfleet.worker.child" in at_fork
    assert _loaded(at_fork, *_SUPERVISOR_ONLY) == []
    assert "prometheus_client" in modules
    assert "http.server" in modules
