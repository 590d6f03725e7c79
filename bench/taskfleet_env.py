"""Taskfleet's benchmark virtualenv, ``.bench-taskfleet-venv/``: Taskfleet as users install it, with only the extras
the benchmark's brokers need, so its workers load (and hold in memory) what a user's would.

.venv has every development tool (the OpenTelemetry SDK, FastAPI, Playwright...), and a client library imports what
it finds installed (redis-py 8.2 imports the OpenTelemetry API when it is there), so a worker run from .venv is not
the one users run. Taskfleet is installed editable (the runs measure this checkout), with redis-py and pika pinned to
the peers' versions in ``bench/peers_env.py`` (the same clients on both sides). A stamp file records what was
installed; the venv is brought up to date when that, or pyproject.toml, changes.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from bench.peers_env import REQUIREMENTS, ensure_venv, installed_versions

ROOT = Path(__file__).resolve().parents[1]
TASKFLEET_VENV = ROOT / ".bench-taskfleet-venv"
#: Everything the Taskfleet runner and its workers import beyond Taskfleet's own dependencies (the async scenario's
#: redis.asyncio is redis-py's).
EXTRAS = "redis,rabbitmq"
#: The clients pinned as for the peers.
CLIENT_PINS = tuple(r for r in REQUIREMENTS if r.startswith(("redis==", "pika==")))
#: The distributions whose versions a report records (``taskfleet:<name>``).
REPORTED = ("taskfleet", "redis", "pika", "orjson", "structlog", "prometheus-client")


def taskfleet_python() -> Path:
    """The venv's interpreter (it may not exist yet: see ``ensure_taskfleet_venv``)."""
    return TASKFLEET_VENV / "bin" / "python"


def _wanted() -> str:
    pyproject = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    return "\n".join((f"-e .[{EXTRAS}]", *CLIENT_PINS, f"pyproject.toml sha256 {pyproject}")) + "\n"


def ensure_taskfleet_venv(*, log: bool = True) -> Path:
    """Create ``.bench-taskfleet-venv`` and install Taskfleet with ``EXTRAS`` unless the stamp says it is there;
    return its python. The venv is made from the running interpreter's base (the same CPython as the peers').

    Raises ``RuntimeError`` with pip's output when the install fails (no index access, say).
    """
    return ensure_venv(TASKFLEET_VENV, ["-e", f".[{EXTRAS}]", *CLIENT_PINS], wanted=_wanted(),
                       what=f"taskfleet[{EXTRAS}]" if log else None)


def taskfleet_versions(python: Path) -> dict[str, str]:
    """``{"taskfleet:<distribution>": version}`` of ``REPORTED`` as installed in ``python``'s environment."""
    return {f"taskfleet:{name}": version for name, version in installed_versions(python, REPORTED).items()}


if __name__ == "__main__":
    print(ensure_taskfleet_venv())
    print(taskfleet_versions(taskfleet_python()))
    sys.exit(0)
