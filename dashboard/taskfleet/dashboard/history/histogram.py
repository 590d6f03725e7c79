"""A small log-scale histogram of task runtimes, kept per minute, task name and queue, so the dashboard's p50, p95 and
p99 come from merging a few of them, never from scanning tasks.

Bins grow by a factor of 2^(1/4) (about 19%) from 1 µs: a percentile is the geometric middle of its bin, within
about 9% of the true value, whatever the runtimes' range (1 µs to about 38 h; longer ones fall in the last bin).
Stored sparse, as text ``"bin:count,bin:count"``: a minute of one task's runs touches only a few bins.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

#: Bins per doubling of the runtime.
BINS_PER_OCTAVE = 4
#: The lowest bin's lower bound, in seconds.
FLOOR_S = 1e-6
#: Bins in all: 37 doublings from 1 µs (about 38 hours).
BINS = 37 * BINS_PER_OCTAVE


def bin_of(runtime_s: float) -> int:
    """The bin of a runtime in seconds (negative, zero and sub-microsecond ones in the first bin)."""
    if not runtime_s > FLOOR_S:  # also NaN
        return 0
    return min(BINS - 1, int(math.log2(runtime_s / FLOOR_S) * BINS_PER_OCTAVE))


def bin_value_s(index: int) -> float:
    """The runtime a bin stands for, in seconds: its geometric middle."""
    return FLOOR_S * 2 ** ((index + 0.5) / BINS_PER_OCTAVE)


def encode(counts: Mapping[int, int]) -> str:
    return ",".join(f"{b}:{n}" for b, n in sorted(counts.items()) if n)


def decode(text: str | None) -> dict[int, int]:
    """The counts of an encoded histogram; an empty dict for None or empty text."""
    counts: dict[int, int] = {}
    if text:
        for part in text.split(","):
            b, _, n = part.partition(":")
            counts[int(b)] = counts.get(int(b), 0) + int(n)
    return counts


def merge_into(total: dict[int, int], counts: Mapping[int, int]) -> None:
    for b, n in counts.items():
        total[b] = total.get(b, 0) + n


def percentiles(counts: Mapping[int, int], quantiles: Iterable[float]) -> list[float | None]:
    """Each quantile (0 to 1) of the runs counted, in seconds; None for each when nothing was counted."""
    wanted = list(quantiles)
    total = sum(counts.values())
    if total <= 0:
        return [None] * len(wanted)
    ordered = sorted(counts.items())
    values: list[float | None] = []
    for q in wanted:
        rank = max(1, math.ceil(q * total))  # the rank-th smallest run
        seen = 0
        for b, n in ordered:
            seen += n
            if seen >= rank:
                values.append(bin_value_s(b))
                break
    return values
