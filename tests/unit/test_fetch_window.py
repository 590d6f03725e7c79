"""Specification of a worker child's fetch size (taskfleet.worker.fetch_window): the whole prefetch for quick tasks,
no more than it can start within ``prefetch_release_s`` for slower ones, in powers of two that do not flip back and
forth."""

from __future__ import annotations

import pytest

from taskfleet.worker.fetch_window import FetchWindow


def steady(duration_s: float, *, prefetch: int = 32, release_s: float = 0.5, tasks: int = 50) -> FetchWindow:
    window = FetchWindow(prefetch=prefetch, release_s=release_s)
    for _ in range(tasks):
        window.observe(duration_s)
    return window


def test_a_child_that_ran_nothing_yet_fetches_the_whole_prefetch() -> None:
    assert FetchWindow(prefetch=32, release_s=0.5).size() == 32


@pytest.mark.parametrize(("duration_s", "size"), [
    (0.0, 32),  # no-ops: the round trips stay amortised
    (0.001, 32),
    (0.012, 32),  # 41 fit in 0.5 s
    (0.02, 16),  # 25 fit: the last of 16 waits 0.3 s
    (0.05, 8),
    (0.1, 4),
    (0.3, 1),  # a second one would wait 0.3 s of the 0.5: one at a time is the power of two below
    (0.5, 1),
    (30.0, 1),
])
def test_a_steady_pace_fetches_what_starts_within_the_release_time_as_a_power_of_two(
        duration_s: float, size: int) -> None:
    assert steady(duration_s).size() == size


@pytest.mark.parametrize(("prefetch", "duration_s", "size"), [
    (8, 0.001, 8),  # never above --prefetch, even when it is no power of two
    (10, 0.001, 10),
    (10, 0.05, 8),
    (1, 0.0, 1),
])
def test_the_window_never_exceeds_the_prefetch(prefetch: int, duration_s: float, size: int) -> None:
    assert steady(duration_s, prefetch=prefetch).size() == size


def test_the_first_slow_task_shrinks_the_window_at_once() -> None:
    window = FetchWindow(prefetch=32, release_s=0.5)

    window.observe(2.0)

    assert window.size() == 1


def test_the_window_grows_back_when_tasks_get_quick() -> None:
    window = steady(2.0)

    for _ in range(60):
        window.observe(0.001)

    assert window.size() == 32


def test_a_pace_at_a_boundary_does_not_flip_the_window() -> None:
    # Given a child at 8 whose tasks now alternate around the pace at which 16 fit (0.5 s / 16 = 31 ms)
    window = steady(0.05)
    sizes = set()
    # When they run at 29 and 33 ms, one after the other
    for i in range(200):
        window.observe(0.029 if i % 2 else 0.033)
        sizes.add(window.size())
    # Then it stays at 8: it grows only when 16 fit with a margin (GROW_MARGIN)
    assert sizes == {8}


def test_a_window_that_grew_shrinks_only_when_tasks_are_slower_than_its_size_allows() -> None:
    window = steady(0.02)  # 16
    for _ in range(50):
        window.observe(0.03)  # 16.7 fit: still 16
    assert window.size() == 16

    for _ in range(50):
        window.observe(0.035)  # 14.3 fit

    assert window.size() == 8
