"""A small log-scale histogram of task runtimes, kept per minute, task name and queue, so the dashboard's p50, p95 and
p99 come from merging a few of them, never from scanning tasks.

Bins grow by a factor of 2^(1/4) (about 19%) from 1 µs: a percentile is the geometric middle of its bin, within
about 9% of the true value, whatever the runtimes' range (1 µs to about 38 h; longer ones fall in the last bin).
Stored packed (``pack``): the counts from the lowest to the highest non-empty bin, 40 bits each, read as one big
integer so that merging a day of minutes is 1,440 integer additions.
"""

from __future__ import annotations

import bisect
import itertools
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


#: Bits per bin in a packed histogram: up to about 10^12 runs per bin in one sum.
LANE_BITS = 40
_LANE_BYTES = LANE_BITS // 8


def pack(counts: Mapping[int, int]) -> bytes:
    """A histogram as stored: its lowest non-empty bin (one byte), then each bin from there to the highest non-empty
    one as a 40-bit little-endian count. Empty: no bytes."""
    return pack_int(as_int(counts))


def as_int(counts: Mapping[int, int]) -> int:
    """The counts as one integer, bin ``b`` in bits ``40*b`` to ``40*b+39``: adding two such integers adds the
    histograms bin by bin, in C (a day of minutes merges in about a millisecond)."""
    total = 0
    for b, n in counts.items():
        total += n << (LANE_BITS * b)
    return total


def unpack_int(blob: bytes | None) -> int:
    """A stored histogram as one integer (``as_int``); 0 for an empty one."""
    if not blob:
        return 0
    return int.from_bytes(blob[1:], "little") << (LANE_BITS * blob[0])


def pack_int(total: int) -> bytes:
    if total <= 0:
        return b""
    low = (total & -total).bit_length() - 1  # the lowest set bit
    lo = low // LANE_BITS
    lanes = total >> (LANE_BITS * lo)
    size = -(-lanes.bit_length() // LANE_BITS) * _LANE_BYTES
    return bytes([lo]) + lanes.to_bytes(size, "little")


def counts_of(total: int) -> dict[int, int]:
    """The bins of a histogram integer (``as_int``): its bytes cut in 40-bit lanes (shifting the integer lane by
    lane would copy it each time)."""
    if total <= 0:
        return {}
    raw = total.to_bytes(-(-total.bit_length() // 8), "little")
    counts: dict[int, int] = {}
    for b, start in enumerate(range(0, len(raw), _LANE_BYTES)):
        n = int.from_bytes(raw[start:start + _LANE_BYTES], "little")
        if n:
            counts[b] = n
    return counts


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


def percentiles_of(total: int, quantiles: Iterable[float]) -> list[float | None]:
    """``percentiles`` of a histogram integer (``as_int``), without building a dict: its lanes, their running sum,
    and a bisection per quantile."""
    wanted = list(quantiles)
    if total <= 0:
        return [None] * len(wanted)
    lo = ((total & -total).bit_length() - 1) // LANE_BITS  # the lowest non-empty bin: skip those below
    lanes = total >> (LANE_BITS * lo)
    raw = lanes.to_bytes(-(-lanes.bit_length() // 8), "little")
    running = list(itertools.accumulate(int.from_bytes(raw[i:i + _LANE_BYTES], "little")
                                        for i in range(0, len(raw), _LANE_BYTES)))
    count = running[-1]
    return [bin_value_s(lo + bisect.bisect_left(running, max(1, math.ceil(q * count)))) for q in wanted]
