"""Percentiles of one run, and the median and spread of repeated runs."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Spread:
    """Repeated measurements of one figure: their median, minimum and maximum."""

    runs: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(tuple(float(v) for v in values))

    @property
    def valid(self) -> tuple[float, ...]:
        return tuple(v for v in self.runs if not math.isnan(v))

    @property
    def median(self) -> float:
        return statistics.median(self.valid) if self.valid else math.nan

    @property
    def low(self) -> float:
        return min(self.valid) if self.valid else math.nan

    @property
    def high(self) -> float:
        return max(self.valid) if self.valid else math.nan

    def as_json(self) -> dict[str, object]:
        return {
            "median": _finite(self.median),
            "min": _finite(self.low),
            "max": _finite(self.high),
            "runs": [_finite(v) for v in self.runs],
        }


def ratios(values: Spread, references: Spread) -> Spread:
    """Run-by-run ratios (the runs were interleaved, so run i of each belongs together)."""
    return Spread.of([v / r if r else math.nan for v, r in zip(values.runs, references.runs, strict=False)])


def differences(values: Spread, references: Spread) -> Spread:
    return Spread.of([v - r for v, r in zip(values.runs, references.runs, strict=False)])


def _finite(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else round(value, 6)
