"""Taskfleet's benchmark against Celery and Dramatiq (``make bench``; docs/benchmarks.md).

``__main__`` orchestrates (servers, one runner process per system and broker, the report); ``scenarios`` holds the
scenarios, written once against a small ``System`` adapter that ``taskfleet_runner``, ``celery_runner`` and
``dramatiq_runner`` implement; ``measure`` has the process, memory and timing tools; ``servers`` the private Redis
and RabbitMQ; ``peers_env`` the peers' virtualenv; ``report`` and ``chart`` the output. ``apps/`` holds the task
modules the workers import. Start it through ``bench/run.py`` (see there why).
"""
