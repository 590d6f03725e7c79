"""The health server's listening socket, bound before the supervisor forks its first children.

The server itself (``http.server``) and the metrics it renders (``prometheus_client``, ~2.7 MiB per process) are
imported only after the first fork, so the children never hold them; binding the port first, with the socket module
alone, still makes a busy port an error before any child starts, and probes that arrive in between wait in the
listen backlog rather than being refused.
"""

from __future__ import annotations

import os
import socket

from taskfleet.errors import ConfigurationError
from taskfleet.worker.logging import Logger

__all__ = ["bind_health_socket", "port_unavailable"]

#: Connections the kernel queues before the server accepts them (probes arriving before it starts, in ms).
_BACKLOG = 16


def bind_health_socket(*, host: str, port: int, required: bool, log: Logger) -> socket.socket | None:
    """A socket listening on ``host``:``port`` (``0``: any free one), closed in every process forked from this one;
    or None when the port cannot be bound and was not ``required`` (the container default: a warning is logged).

    Raises:
        ConfigurationError: a ``required`` port (``--health-port`` or ``TASKFLEET_HEALTH_PORT``) cannot be bound,
            e.g. it is in use (the caller logs it and exits with ``ExitCode.BAD_CONFIG``).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server does: restarts rebind at once
        sock.bind((host, port))
        sock.listen(_BACKLOG)
    except OSError as exc:
        sock.close()
        port_unavailable(exc, host=host, port=port, required=required, log=log)
        return None
    # A child must not keep the port bound after the supervisor is gone.
    os.register_at_fork(after_in_child=sock.close)
    return sock


def port_unavailable(exc: OSError, *, host: str, port: int, required: bool, log: Logger) -> None:
    """What a health port that cannot be bound (``exc``) means: an error for a ``required`` one, a warning for the
    container default (the process runs without health checks).

    Raises:
        ConfigurationError: ``required`` (the caller logs it and exits with ``ExitCode.BAD_CONFIG``).
    """
    if required:
        raise ConfigurationError(f"cannot serve health checks on {host}:{port}: {exc} (choose another "
                                 "--health-port or TASKFLEET_HEALTH_PORT, or 0 for any free port)") from exc
    log.warning("health checks not served: their default port is in use", host=host, port=port, error=str(exc),
                hint="set --health-port or TASKFLEET_HEALTH_PORT to serve them (0: any free port)")
