"""03 periodic tasks: schedules that beat sends (an interval, a crontab, a cron string) and workers run."""

from __future__ import annotations

from pathlib import Path

from taskfleet import App, Task, crontab

#: The embedded SQLite broker in this directory (TASKFLEET_BROKER_URL overrides it, as in 01). Beat keeps its
#: leader lease and its per-entry cursors in the broker too: here, tables of this file.
LOCAL_DB = "sqlite:///taskfleet.db"

#: Crontab fields are read in this zone (an IANA name).
app = App("periodic", broker=LOCAL_DB, result_backend=LOCAL_DB, timezone="Europe/Berlin")

#: Each heartbeat appends the tick it belongs to here, in the worker's working directory; watch.py reads it.
TICKS = Path("ticks.log")
#: Beat puts the tick's scheduled time (ISO 8601, UTC) in this header of every message it sends.
SCHEDULED_HEADER = "taskfleet-beat-scheduled"


@app.task(bind=True)
def heartbeat(self: Task[str]) -> str:
    """Sent every second; records which tick it is."""
    scheduled = str(self.request.headers.get(SCHEDULED_HEADER))
    with TICKS.open("a", encoding="utf-8") as ticks:
        ticks.write(f"{scheduled}\n")
    return scheduled


@app.task
def weekly_report(region: str) -> str:
    return f"weekly report for {region}"


# An interval in seconds; catch_up="none": a tick missed while no beat ran is dropped, not sent late.
app.add_periodic_task(1.0, heartbeat.s(), name="heartbeat", catch_up="none")
# A crontab, in the app's time zone: Mondays at 09:00 Berlin time, daylight saving time included.
app.add_periodic_task(crontab(minute="0", hour="9", day_of_week="mon"), weekly_report.s("eu"),
                      name="weekly-report-eu")


@app.periodic(cron="*/15 * * * *")  # a cron string; the task and its schedule entry share the name
def cleanup() -> None:
    """Every 15 minutes."""
