"""Django settings of the example shop: the usual ones, then Taskfleet's, under the ``TASKFLEET_`` namespace."""

import os
from datetime import timedelta
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "example-07-not-a-secret"  # an example: never reuse a key from a repository
DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "orders",
]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "proj.urls"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BASE_DIR / "db.sqlite3",
        # The web process and the worker's children write to the same file: wait for a lock, up to 20 s.
        "OPTIONS": {"timeout": 20},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

# -- Taskfleet (app.config_from_object("django.conf:settings", namespace="TASKFLEET") in proj/taskfleet.py) --------
# The embedded SQLite broker: a file beside db.sqlite3. TASKFLEET_BROKER_URL in the environment picks another one
# (redis://..., amqp://...) for this process and the worker alike.
TASKFLEET_BROKER_URL = os.environ.get("TASKFLEET_BROKER_URL", f"sqlite:///{BASE_DIR / 'taskfleet.db'}")
TASKFLEET_RESULT_BACKEND = os.environ.get("TASKFLEET_RESULT_BACKEND", f"sqlite:///{BASE_DIR / 'taskfleet.db'}")
TASKFLEET_DEFAULT_QUEUE = "shop"
TASKFLEET_RESULT_EXPIRES_S = timedelta(days=1)
TASKFLEET_TIMEZONE = TIME_ZONE
