"""Specification of rate limits: Celery's spellings (taskfleet.rates) and the per-worker limiter that reserves
each deferred message a slot instead of holding it (taskfleet.worker.rate_limiter)."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from taskfleet import App
from taskfleet.errors import ConfigurationError
from taskfleet.rates import Rate, parse_rate
from taskfleet.worker.rate_limiter import LocalRateLimiter, gcra_reserve


@pytest.mark.parametrize(("text", "expected"), [
    ("10/s", Rate(10, 1)),
    ("100/m", Rate(100, 60)),
    ("1000/h", Rate(1000, 3600)),
    ("5", Rate(5, 1)),
    (5, Rate(5, 1)),
    (0.5, Rate(0.5, 1)),
    (" 3 / m ", Rate(3, 60)),
    ("2/sec", Rate(2, 1)),
    (None, None),
    ("", None),
    ("0/s", None),
])
def test_celery_rate_limits_parse_to_starts_per_period(text: str | float | None, expected: Rate | None) -> None:
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text", ["fast", "10/d", "-1/s", "/s", "inf", True])
def test_anything_else_is_refused(text: object) -> None:
    with pytest.raises(ConfigurationError, match="not a rate limit"):
        parse_rate(text)  # type: ignore[arg-type]


def test_a_rate_spaces_its_starts_evenly_and_prints_as_celery_spells_it() -> None:
    assert Rate(100, 60).interval_s == pytest.approx(0.6)
    assert str(Rate(100, 60)) == "100/m"
    assert str(Rate(0.5, 1)) == "0.5/s"


def test_a_task_declared_with_a_bad_rate_limit_fails_at_declaration() -> None:
    with pytest.raises(ConfigurationError, match="not a rate limit"):
        App("t").task(rate_limit="often")(lambda: None)


@pytest.mark.parametrize(("tat", "now", "expected"), [
    (0.0, 100.0, (0.0, 100.5)),  # first start: now, the next slot half a second later
    (100.5, 100.0, (0.5, 101.0)),  # over the limit: the next slot is reserved for it
    (99.0, 100.0, (0.0, 100.5)),  # the reservations have passed: now again
    (170.0, 100.0, (70.0, None)),  # beyond the 60 s horizon: no reservation
    (160.0, 100.0, (60.0, 160.5)),  # at the horizon: still reserved
])
def test_gcra_reserves_the_next_free_slot_within_the_horizon(tat: float, now: float,
                                                              expected: tuple[float, float | None]) -> None:
    assert gcra_reserve(tat, now, interval_s=0.5, horizon_s=60.0) == expected


def limiter(**kwargs: float) -> LocalRateLimiter:
    return LocalRateLimiter(multiprocessing.get_context("fork").Lock(), **kwargs)  # type: ignore[arg-type]


def test_a_burst_over_the_limit_gets_slots_one_interval_apart_not_one_instant() -> None:
    shared = limiter()
    delays = [shared.reserve("t.send", Rate(10, 1), now=1000.0) for _ in range(5)]
    assert delays == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_each_task_name_has_its_own_slots() -> None:
    shared = limiter()
    shared.reserve("t.a", Rate(1, 1), now=1000.0)
    assert shared.reserve("t.b", Rate(1, 1), now=1000.0) == 0.0
    assert shared.reserve("t.a", Rate(1, 1), now=1000.0) == pytest.approx(1.0)


def test_beyond_the_horizon_a_message_is_deferred_by_a_spread_time_without_a_reservation() -> None:
    shared = limiter(horizon_s=2.0)
    delays = [shared.reserve("t.a", Rate(1, 1), now=1000.0) for _ in range(4)]
    assert delays[:3] == [0.0, 1.0, 2.0]
    assert 2.0 <= delays[3] < 4.0
    # It did not take a slot: the next one asked for is still the one after 2 s.
    assert shared.reserve("t.a", Rate(1, 1), now=1002.5) == pytest.approx(0.5)


def test_when_the_table_is_full_of_live_reservations_a_new_name_is_not_limited() -> None:
    shared = limiter(table_size=2)
    shared.reserve("t.a", Rate(1, 1), now=1000.0)
    shared.reserve("t.b", Rate(1, 1), now=1000.0)
    assert shared.reserve("t.c", Rate(1, 1), now=1000.0) == 0.0
    assert shared.reserve("t.c", Rate(1, 1), now=1000.1) == 0.0
    # Once their reservations pass, their entries are free again.
    shared.reserve("t.c", Rate(1, 1), now=1001.5)
    assert shared.reserve("t.c", Rate(1, 1), now=1001.5) == pytest.approx(1.0)


def test_forked_children_share_the_slots() -> None:
    shared = limiter()
    pid = os.fork()
    if pid == 0:  # the child takes the first slot
        shared.reserve("t.a", Rate(1, 1), now=1000.0)
        os._exit(0)
    os.waitpid(pid, 0)
    assert shared.reserve("t.a", Rate(1, 1), now=1000.0) == pytest.approx(1.0)


def test_starts_are_spaced_too_waiting_briefly_or_deferred_when_their_turn_is_far() -> None:
    # Two deferred messages came back bunched (the broker delivered the first one late)
    shared = limiter()
    assert shared.claim_start("t.a", Rate(5, 1), max_wait_s=0.25, now=1000.0) == (0.0, True)
    assert shared.claim_start("t.a", Rate(5, 1), max_wait_s=0.25, now=1000.01) == (pytest.approx(0.19), True)
    # A third in the same instant would wait 0.39 s: beyond the wait allowed, so it is deferred, taking nothing
    assert shared.claim_start("t.a", Rate(5, 1), max_wait_s=0.25, now=1000.01) == (pytest.approx(0.39), False)
    assert shared.claim_start("t.a", Rate(5, 1), max_wait_s=0.25, now=1000.4) == (pytest.approx(0.0, abs=1e-9), True)
