"""How many messages a worker child asks for per fetch: ``--prefetch`` at most, and no more than it can start within
``prefetch_release_s`` at the pace of its recent tasks.

A child that prefetched more than that would give the rest back (``Holdings.take_waiting``) every
``prefetch_release_s``: on a steady backlog of 100 ms tasks on RabbitMQ that churn (republished and fetched again,
each time) made the drain take 12 to 25% longer (docs/benchmarks.md). So the window follows the tasks: no-op tasks
keep the whole ``--prefetch`` (its round trips amortised), 100 ms tasks take 4 at a time, and tasks of 0.3 s or
longer one at a time, which leaves the rest of a burst in the queue for the other children and for pods still
starting. A child that knows nothing yet (its first fetch) takes the whole ``--prefetch``; what it cannot start in
time goes back by the release.

The size is a power of two: RabbitMQ applies a new prefetch only to a new consumer, so each change restarts the
child's consumers (one round trip), and a window that moved with every task would restart them all the time. It
shrinks as soon as the tasks slow down and grows only when they are clearly faster (``GROW_MARGIN``), so a pace near
a boundary does not flip it back and forth.
"""

from __future__ import annotations

#: Weight of the latest task in the running mean of task durations: about the last ten tasks count.
SMOOTHING = 0.2
#: The window doubles only when the mean pace would fit this much more than the doubled window.
GROW_MARGIN = 1.25


class FetchWindow:
    """The fetch size of one child: ``size()`` before each fetch, ``observe()`` after each task it ran."""

    def __init__(self, *, prefetch: int, release_s: float) -> None:
        self._prefetch = prefetch
        self._release_s = release_s
        self._mean_s: float | None = None
        self._size = prefetch

    def observe(self, duration_s: float) -> None:
        """A task ran for ``duration_s`` seconds (wall time: what the messages behind it waited)."""
        mean = duration_s if self._mean_s is None else self._mean_s + SMOOTHING * (duration_s - self._mean_s)
        self._mean_s = mean
        # Tasks at this pace that run one after another within release_s: the last of them waited less than that.
        fits = self._release_s / mean if mean > 0 else float(self._prefetch)
        down = min(self._prefetch, _power_of_two_at_most(fits))
        if down < self._size:
            self._size = down
            return
        up = min(self._prefetch, _power_of_two_at_most(fits / GROW_MARGIN))
        if up > self._size:
            self._size = up

    def size(self) -> int:
        return self._size


def _power_of_two_at_most(value: float) -> int:
    """The largest power of two not above ``value``; 1 below 2."""
    whole = min(int(value), 1 << 30)
    return 1 << (whole.bit_length() - 1) if whole >= 1 else 1
