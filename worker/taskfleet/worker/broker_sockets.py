"""The broker connections a worker child hands to its supervisor, so that its death alone does not end them.

On RabbitMQ a connection is the lease on its deliveries: the moment it closes, RabbitMQ gives every unacked one back,
counted as lost. A child sends the socket of each broker connection it opens (``Broker.watch_connections``) over a
Unix socketpair (SCM_RIGHTS); the supervisor keeps a copy open, so when the child dies the connection lives on until
the supervisor has given back what it knows of the child's deliveries (its unstarted ones uncounted), and only then
closes its copy. Before that it reads what is left unread in it (``unread``): deliveries the broker pushed after
the child's last read, which the child could not report. On brokers whose deliveries are leases (Redis, SQLite)
nothing is sent.
"""

from __future__ import annotations

import contextlib
import os
import socket

#: The most a supervisor reads from a dead child's connection (a prefetch of large messages fits).
UNREAD_MAX_BYTES = 64 * 2**20


class BrokerSockets:
    """The supervisor's side of one child's hand-over: its end of the socketpair and its copy of the child's
    current broker socket. ``theirs`` is the child's end, passed to it at the fork and closed here after it."""

    def __init__(self) -> None:
        self._ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._ours.setblocking(False)
        self._fds: list[int] = []

    def fileno(self) -> int:
        """The supervisor's end: readable when the child has sent a socket (``multiprocessing.connection.wait``)."""
        return self._ours.fileno()

    @property
    def fds(self) -> tuple[int, ...]:
        """The copies held now: a child forked later closes them at once (its copy would keep them open)."""
        return tuple(self._fds)

    def forked(self) -> None:
        """The child has started with ``theirs``: close it here."""
        self.theirs.close()

    def take(self) -> None:
        """Receive the sockets the child has handed over; keep the newest one open. An older one belongs to a
        connection the child has since closed or dropped (pika shuts a socket down when it closes it, so a copy kept
        here does not keep it open; one that was not would)."""
        while True:
            try:
                _data, fds, _flags, _addr = socket.recv_fds(self._ours, 1, 8)
            except OSError:  # BlockingIOError included: nothing more was sent
                return
            if not fds:
                return
            for fd in self._fds + fds[:-1]:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._fds = fds[-1:]

    def unread(self) -> bytes:
        """What the child left unread in its current broker connection, read here without waiting (once it is dead,
        before ``close``: deliveries the broker pushed that the child never saw, ``Broker.unread_deliveries``). At
        most ``UNREAD_MAX_BYTES``; nothing when the connection was closed."""
        chunks: list[bytes] = []
        left = UNREAD_MAX_BYTES
        for fd in self._fds:
            with contextlib.suppress(OSError), socket.socket(fileno=os.dup(fd)) as sock:
                while left > 0:
                    try:
                        chunk = sock.recv(min(left, 2**16), socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        break
                    if not chunk:
                        break
                    chunks.append(chunk)
                    left -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        """Close the copies and the hand-over: the broker now takes back what the child's connection held."""
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []
        self._ours.close()
