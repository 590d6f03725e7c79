"""The example's settings, with the probe app installed and ``CONN_MAX_AGE`` from ``PROBE_CONN_MAX_AGE``."""

import os

from proj.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "probe"]  # noqa: F405
DATABASES["default"]["CONN_MAX_AGE"] = int(os.environ.get("PROBE_CONN_MAX_AGE", "0"))  # noqa: F405
