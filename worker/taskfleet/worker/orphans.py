"""Reaping orphans: as a container's PID 1 the worker inherits every orphaned process and must reap it."""

from __future__ import annotations

import contextlib
import os


def reap_orphans(ours: set[int]) -> None:
    """Reap exited processes that are not our children (multiprocessing reaps those itself). ``WNOWAIT`` peeks at a
    zombie without reaping it, so one of ours is left for multiprocessing."""
    while True:
        try:
            found = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if found is None or found.si_pid in ours:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(found.si_pid, os.WNOHANG)
