"""Timing helpers and latency summaries."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Latency:
    """Percentiles of a sample of durations, in seconds."""

    count: int
    p50: float
    p99: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Latency:
        """Summarises ``samples`` (nearest-rank percentiles).

        Raises:
            ValueError: ``samples`` is empty.
        """
        if not samples:
            raise ValueError("no samples")
        ordered = sorted(samples)
        return cls(len(ordered), percentile(ordered, 50), percentile(ordered, 99))


def percentile(ordered: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile of an already sorted, non-empty sequence."""
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def median(samples: Sequence[float]) -> float:
    """The median (lower middle value for an even count) of a non-empty sequence."""
    return percentile(sorted(samples), 50)
