"""Named exit codes of ``taskfleet worker``, so a CrashLoopBackOff says why (documented in docs/worker.md)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # drained and stopped (SIGTERM), or --check passed
    FAILURE = 1  # unexpected error (see the log)
    USAGE = 2  # bad command line
    APP_IMPORT_ERROR = 3  # --app could not be imported or holds no App
    BROKER_UNREACHABLE = 4  # the broker did not answer within --broker-timeout
    BAD_CONFIG = 5  # a setting is invalid (no broker configured, bad queue name, health port in use)
