"""``next_run(spec, after)``: cron fields, intervals, month ends, leap years and DST, as tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from taskfleet import ConfigurationError, Every, crontab, next_run
from taskfleet.schedules import next_runs, to_schedule, zone

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("* * * * *", utc(2024, 1, 1, 10, 0), utc(2024, 1, 1, 10, 1)),  # strictly after
        ("* * * * *", utc(2024, 1, 1, 10, 0, 30), utc(2024, 1, 1, 10, 1)),
        ("*/15 * * * *", utc(2024, 1, 1, 10, 7), utc(2024, 1, 1, 10, 15)),  # step
        ("0-30/10 * * * *", utc(2024, 1, 1, 10, 31), utc(2024, 1, 1, 11, 0)),  # range with step
        ("0 10,17 * * *", utc(2024, 1, 1, 10, 0), utc(2024, 1, 1, 17, 0)),  # list
        ("0 10,17 * * *", utc(2024, 1, 1, 17, 0), utc(2024, 1, 2, 10, 0)),
        ("0 9-11 * * *", utc(2024, 1, 1, 11, 0), utc(2024, 1, 2, 9, 0)),  # range
        ("0 0 * * 1", utc(2024, 1, 3), utc(2024, 1, 8)),  # Monday (2024-01-03 is a Wednesday)
        ("0 0 * * 0", utc(2024, 1, 3), utc(2024, 1, 7)),  # 0 = Sunday
        ("0 0 * * mon-fri", utc(2024, 1, 5, 12), utc(2024, 1, 8)),  # Friday noon -> Monday
        ("0 0 13 * 5", utc(2024, 1, 1), utc(2024, 1, 5)),  # day-of-month OR day-of-week (cron rule)
        ("0 0 31 * *", utc(2024, 1, 31, 1), utc(2024, 3, 31)),  # months without a 31st are skipped
        ("0 0 30 * *", utc(2024, 1, 30, 1), utc(2024, 3, 30)),  # no February 30th
        ("0 0 29 2 *", utc(2023, 3, 1), utc(2024, 2, 29)),  # leap day: next leap year
        ("0 0 29 2 *", utc(2024, 2, 29, 0, 0), utc(2028, 2, 29)),
        ("0 0 1 */3 *", utc(2024, 2, 15), utc(2024, 4, 1)),  # quarterly
        ("59 23 31 12 *", utc(2024, 12, 31, 23, 59), utc(2025, 12, 31, 23, 59)),  # year end
    ],
)
def test_next_run_of_a_cron_expression_in_utc(expression: str, after: datetime, expected: datetime) -> None:
    assert next_run(crontab.parse(expression), after) == expected


@pytest.mark.parametrize(
    ("expression", "after_local", "expected_local", "expected_utc"),
    [
        # Spring forward in Berlin (2024-03-31 02:00 CET -> 03:00 CEST): 02:30 does not exist; fires once at 03:00
        ("30 2 * * *", datetime(2024, 3, 30, 3, 0), datetime(2024, 3, 31, 3, 0), utc(2024, 3, 31, 1, 0)),
        ("30 2 * * *", datetime(2024, 3, 31, 3, 0), datetime(2024, 4, 1, 2, 30), utc(2024, 4, 1, 0, 30)),
        # Fall back (2024-10-27 03:00 CEST -> 02:00 CET): 02:30 exists twice; fires once, at the first
        ("30 2 * * *", datetime(2024, 10, 26, 3, 0), datetime(2024, 10, 27, 2, 30), utc(2024, 10, 27, 0, 30)),
        ("30 2 * * *", datetime(2024, 10, 27, 2, 31), datetime(2024, 10, 28, 2, 30), utc(2024, 10, 28, 1, 30)),
        # A wildcard hour fires at every real matching instant, including the repeated hour
        ("0 * * * *", datetime(2024, 10, 27, 1, 30), datetime(2024, 10, 27, 2, 0), utc(2024, 10, 27, 0, 0)),
        # Fixed local time across the change: 10:00 local stays 10:00 local (UTC moves by an hour)
        ("0 10 * * *", datetime(2024, 3, 30, 11, 0), datetime(2024, 3, 31, 10, 0), utc(2024, 3, 31, 8, 0)),
    ],
)
def test_next_run_in_berlin_neither_skips_nor_doubles_around_dst(
        expression: str, after_local: datetime, expected_local: datetime, expected_utc: datetime) -> None:
    got = next_run(crontab.parse(expression), after_local.replace(tzinfo=BERLIN), BERLIN)
    assert got == expected_utc
    assert got.astimezone(BERLIN).replace(tzinfo=None) == expected_local


@pytest.mark.parametrize(
    ("expression", "day", "fires"),
    [
        ("30 2 * * *", datetime(2024, 3, 10, tzinfo=NEW_YORK), 1),  # spring forward in New York
        ("30 1 * * *", datetime(2024, 11, 3, tzinfo=NEW_YORK), 1),  # 01:30 happens twice; fires once
        ("0 * * * *", datetime(2024, 3, 10, tzinfo=NEW_YORK), 23),  # a 23-hour day
        ("0 * * * *", datetime(2024, 11, 3, tzinfo=NEW_YORK), 25),  # a 25-hour day
    ],
)
def test_a_dst_day_in_new_york_has_the_right_number_of_fires(expression: str, day: datetime, fires: int) -> None:
    start = day - timedelta(seconds=1)
    end = (day + timedelta(days=1)).replace(tzinfo=NEW_YORK)
    runs = [r for r in next_runs(crontab.parse(expression), start, 30, NEW_YORK) if r < end]
    assert len(runs) == fires
    assert len(set(runs)) == fires


@pytest.mark.parametrize(
    ("seconds", "after", "expected"),
    [
        (1.0, utc(2024, 1, 1, 0, 0, 0), utc(2024, 1, 1, 0, 0, 1)),
        (30.0, utc(2024, 1, 1, 0, 0, 10), utc(2024, 1, 1, 0, 0, 30)),  # aligned to the epoch, not to `after`
        (30.0, utc(2024, 1, 1, 0, 0, 30), utc(2024, 1, 1, 0, 1, 0)),
        (3600.0, utc(2024, 1, 1, 10, 59, 59), utc(2024, 1, 1, 11, 0)),
        (7.0, datetime.fromtimestamp(1_700_000_000.5, UTC), datetime.fromtimestamp(1_700_000_001, UTC)),
    ],
)
def test_next_run_of_an_interval_is_the_next_multiple_since_the_epoch(
        seconds: float, after: datetime, expected: datetime) -> None:
    assert next_run(Every(seconds), after) == expected


def test_every_replica_computes_the_same_interval_ticks_whenever_it_starts() -> None:
    a = next_runs(Every(5), utc(2024, 1, 1, 0, 0, 1), 3)
    b = next_runs(Every(5), utc(2024, 1, 1, 0, 0, 3, 500000), 3)
    assert a == b


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (30, Every(30.0)),
        (2.5, Every(2.5)),
        (timedelta(minutes=1), Every(60.0)),
        ("*/5 * * * *", crontab(minute="*/5")),
        (crontab(hour="3", minute="0"), crontab(hour="3", minute="0")),
    ],
)
def test_schedules_are_written_as_seconds_timedeltas_or_cron(value: object, expected: object) -> None:
    assert to_schedule(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "make",
    [
        lambda: crontab(minute="61"),
        lambda: crontab(hour="*/0"),
        lambda: crontab(minute="1 2"),
        lambda: crontab.parse("* * * *"),
        lambda: Every(0.5),
        lambda: Every(float("nan")),
        lambda: to_schedule(True),
        lambda: zone("Mars/Olympus"),
    ],
    ids=["minute-61", "step-0", "two-fields", "four-fields", "too-short", "nan", "bool", "unknown-zone"],
)
def test_invalid_schedules_are_configuration_errors(make: object) -> None:
    with pytest.raises(ConfigurationError):
        make()  # type: ignore[operator]


# -- crontab accepts what Celery's accepts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "expression"),
    [
        # The examples of Celery's documentation (Periodic Tasks, "Crontab schedules"), in its argument order
        (crontab(), "* * * * *"),
        (crontab(minute=0, hour=0), "0 0 * * *"),
        (crontab(minute=0, hour="*/3"), "0 */3 * * *"),
        (crontab(minute=0, hour="0,3,6,9,12,15,18,21"), "0 0,3,6,9,12,15,18,21 * * *"),
        (crontab(minute="*/15"), "*/15 * * * *"),
        (crontab(day_of_week="sunday"), "* * * * sun"),
        (crontab(minute="*", hour="*", day_of_week="sun"), "* * * * sun"),
        (crontab(minute="*/10", hour="3,17,22", day_of_week="thu,fri"), "*/10 3,17,22 * * thu,fri"),
        (crontab(minute=0, hour="*/2,*/3"), "0 */2,*/3 * * *"),
        (crontab(minute=0, hour="*/5"), "0 */5 * * *"),
        (crontab(minute=0, hour="*/3,8-17"), "0 */3,8-17 * * *"),
        (crontab(0, 0, day_of_month="2"), "0 0 2 * *"),
        (crontab(0, 0, day_of_month="2-30/2"), "0 0 2-30/2 * *"),
        (crontab(0, 0, day_of_month="1-7,15-21"), "0 0 1-7,15-21 * *"),
        (crontab(0, 0, day_of_month="11", month_of_year="5"), "0 0 11 5 *"),
        (crontab(0, 0, month_of_year="*/3"), "0 0 * */3 *"),
        (crontab(hour=7, minute=30, day_of_week=1), "30 7 * * 1"),  # Celery's "Monday morning" example
        # The forms of the issue: numbers, and spaces after commas
        (crontab(hour=10, minute=50), "50 10 * * *"),
        (crontab(hour="10, 17"), "* 10,17 * * *"),
        (crontab(hour=" 10 ,17 "), "* 10,17 * * *"),
        (crontab(day_of_week="mon, wed,  fri"), "* * * * mon,wed,fri"),
        # Celery's other types: lists, tuples, sets and ranges of numbers
        (crontab(minute=[0, 30]), "0,30 * * * *"),
        (crontab(minute=(45, 15)), "15,45 * * * *"),
        (crontab(minute={30, 0}), "0,30 * * * *"),
        (crontab(hour=frozenset({6})), "* 6 * * *"),
        (crontab(hour=range(9, 18)), "* 9-17 * * *"),
        (crontab(hour=range(1, 5)), "* 1-4 * * *"),
        (crontab(hour=range(0, 24, 6)), "* 0,6,12,18 * * *"),
        (crontab(hour=range(3, 4)), "* 3 * * *"),
        (crontab(day_of_week=range(1, 6)), "* * * * 1-5"),
        # Day names as Celery reads them: any case, whole or cut short
        (crontab(day_of_week="Sunday"), "* * * * sun"),
        (crontab(day_of_week="tues-thurs"), "* * * * tue-thu"),
        (crontab(day_of_week="MON-fri"), "* * * * mon-fri"),
    ],
)
def test_crontab_takes_what_celerys_takes(schedule: crontab, expression: str) -> None:
    assert schedule.expression == expression


def test_crontab_fields_are_kept_as_cron_strings_so_equal_schedules_compare_equal() -> None:
    assert crontab(hour=10, minute=[0, 30]) == crontab(minute="0,30", hour="10") == crontab.parse("0,30 10 * * *")


@pytest.mark.parametrize(
    ("schedule", "after", "expected"),
    [
        (crontab(hour="10, 17", minute=0), utc(2024, 1, 1, 10, 0), utc(2024, 1, 1, 17, 0)),
        (crontab(minute=0, hour="*/3,8-17"), utc(2024, 1, 1, 9, 0), utc(2024, 1, 1, 10, 0)),
        (crontab(minute=0, hour="*/3,8-17"), utc(2024, 1, 1, 17, 0), utc(2024, 1, 1, 18, 0)),
        (crontab(minute=0, hour="*/3,8-17"), utc(2024, 1, 1, 18, 0), utc(2024, 1, 1, 21, 0)),
        (crontab(hour=7, minute=30, day_of_week=1), utc(2024, 1, 3), utc(2024, 1, 8, 7, 30)),
        (crontab(0, 0, day_of_month="2-30/2"), utc(2024, 2, 28, 1), utc(2024, 3, 2)),
        (crontab(minute=range(0, 60, 20)), utc(2024, 1, 1, 10, 41), utc(2024, 1, 1, 11, 0)),
    ],
)
def test_next_run_of_celery_style_crontabs(schedule: crontab, after: datetime, expected: datetime) -> None:
    assert next_run(schedule, after) == expected


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"hour": True}, "crontab hour= must be"),
        ({"hour": None}, "crontab hour= must be"),
        ({"hour": 1.5}, "crontab hour= must be"),
        ({"minute": []}, "crontab minute= must be"),
        ({"minute": range(5, 5)}, "crontab minute= must be"),
        ({"minute": ["0", "30"]}, "crontab minute= must be"),
        ({"minute": [0, 1.5]}, "crontab minute= must be"),
        ({"minute": ""}, "crontab minute= must be"),
        ({"minute": "1 2"}, "crontab minute= must be"),
        ({"minute": "0 ,"}, "invalid cron schedule"),
        ({"hour": 24}, "invalid cron schedule"),
        ({"hour": [1, 24]}, "invalid cron schedule"),
        ({"minute": -1}, "invalid cron schedule"),
        ({"day_of_week": "sundae"}, "invalid cron schedule"),
        ({"day_of_month": 0}, "invalid cron schedule"),
        ({"month_of_year": 13}, "invalid cron schedule"),
    ],
)
def test_crontab_refuses_nonsense_with_a_configuration_error(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        crontab(**kwargs)  # type: ignore[arg-type]


def test_next_run_refuses_a_naive_datetime() -> None:
    with pytest.raises(ValueError, match="aware"):
        next_run(Every(1), datetime(2024, 1, 1))
