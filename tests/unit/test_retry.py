"""Specification of retry timing (taskfleet.retry.retry_delay_s): a pure function, table-tested."""

from __future__ import annotations

import pytest

from taskfleet.retry import DEFAULT_RETRY_DELAY_S, retry_delay_s


def _never_called() -> float:
    raise AssertionError("rng must not be used without jitter")


@pytest.mark.parametrize(
    ("retries", "backoff", "backoff_max_s", "default_delay_s", "expected"),
    [
        pytest.param(0, False, 600.0, 180.0, 180.0, id="no backoff: the default delay"),
        pytest.param(5, False, 600.0, 180.0, 180.0, id="no backoff: the same delay on every retry"),
        pytest.param(5, False, 10.0, 180.0, 180.0, id="no backoff: the cap does not apply"),
        pytest.param(0, False, 600.0, -5.0, 0.0, id="no backoff: a negative default waits 0"),
        pytest.param(0, True, 600.0, 180.0, 1.0, id="backoff True: 1 s first"),
        pytest.param(1, True, 600.0, 180.0, 2.0, id="backoff True: then 2 s"),
        pytest.param(2, True, 600.0, 180.0, 4.0, id="backoff True: then 4 s"),
        pytest.param(3, True, 600.0, 180.0, 8.0, id="backoff True: then 8 s"),
        pytest.param(0, 0.5, 600.0, 180.0, 0.5, id="numeric base: base first"),
        pytest.param(3, 0.5, 600.0, 180.0, 4.0, id="numeric base: base times 2**retries"),
        pytest.param(2, 3, 600.0, 180.0, 12.0, id="integer base"),
        pytest.param(10, True, 600.0, 180.0, 600.0, id="capped at backoff_max_s"),
        pytest.param(4, 2.0, 20.0, 180.0, 20.0, id="capped: 32 s becomes 20 s"),
        pytest.param(10_000, True, 600.0, 180.0, 600.0, id="a huge retry count is capped, not an overflow"),
    ],
)
def test_retry_delay_without_jitter(
    retries: int, backoff: bool | float, backoff_max_s: float, default_delay_s: float, expected: float
) -> None:
    delay = retry_delay_s(retries=retries, backoff=backoff, backoff_max_s=backoff_max_s, jitter=False,
                          default_delay_s=default_delay_s, rng=_never_called)

    assert delay == pytest.approx(expected)


@pytest.mark.parametrize(
    ("retries", "rng_value", "expected"),
    [
        pytest.param(3, 0.0, 4.0, id="lowest draw: half the wait"),
        pytest.param(3, 0.5, 6.0, id="middle draw: three quarters of the wait"),
        pytest.param(3, 0.999, 7.996, id="highest draw: just under the full wait"),
        pytest.param(20, 0.0, 300.0, id="jitter applies after the cap"),
    ],
)
def test_jitter_picks_the_wait_within_half_to_full(retries: int, rng_value: float, expected: float) -> None:
    delay = retry_delay_s(retries=retries, backoff=True, backoff_max_s=600.0, jitter=True, rng=lambda: rng_value)

    assert delay == pytest.approx(expected)


@pytest.mark.parametrize("rng_value", [0.0, 0.1, 0.37, 0.5, 0.82, 0.999])
def test_a_jittered_wait_stays_within_half_to_full_of_the_backoff(rng_value: float) -> None:
    wait = 16.0  # retries=4, 1 s base

    delay = retry_delay_s(retries=4, backoff=True, jitter=True, rng=lambda: rng_value)

    assert wait / 2 <= delay <= wait


def test_jitter_does_not_apply_without_backoff() -> None:
    assert retry_delay_s(retries=2, backoff=False, jitter=True, rng=lambda: 0.0) == DEFAULT_RETRY_DELAY_S


@pytest.mark.parametrize("retries", [-1, -100])
def test_negative_retries_are_refused(retries: int) -> None:
    with pytest.raises(ValueError, match="retries must be >= 0"):
        retry_delay_s(retries=retries, backoff=True)
