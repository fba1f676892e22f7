"""Interval calendar features on a regular grid, in market time (pure integer arithmetic).

The grid is described by its first interval start (UTC, ``numpy.datetime64``), the interval
length and the market clock offset (NEM: UTC+10, no daylight saving). Public holidays are not
distinguished from working days (a documented simplification: day types are weekday/weekend).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

IntArray = NDArray[np.int64]

PEAK_START_HOUR = 7
PEAK_END_HOUR = 22  # NEM peak: 07:00-22:00 market time on weekdays


@dataclass(frozen=True)
class Grid:
    """A regular interval grid.

    ``start_utc`` is the start of the first interval; ``interval_minutes`` the step;
    ``n_intervals`` the length; ``market_offset_minutes`` the market clock's offset from UTC.
    """

    start_utc: np.datetime64
    interval_minutes: int
    n_intervals: int
    market_offset_minutes: int = 600

    @property
    def slots_per_day(self) -> int:
        """Intervals per market day."""
        return 1440 // self.interval_minutes

    @property
    def years(self) -> float:
        """Length of the grid in years of 365 days [year]: ``n_intervals x interval_minutes /
        (1440 x 365)`` (a 366-day leap year counts 366/365; partial months count as such)."""
        return self.n_intervals * self.interval_minutes / (1440.0 * 365.0)

    @property
    def hours_per_interval(self) -> float:
        """Interval length [h]."""
        return self.interval_minutes / 60.0

    def starts_utc(self) -> NDArray[np.datetime64]:
        """Interval start instants (UTC, minute resolution)."""
        step = np.timedelta64(self.interval_minutes, "m")
        return self.start_utc.astype("datetime64[m]") + step * np.arange(self.n_intervals)

    def features(self, lo: int = 0, hi: int | None = None) -> GridFeatures:
        """Calendar features of intervals ``lo:hi`` in market time."""
        hi = self.n_intervals if hi is None else hi
        step = np.timedelta64(self.interval_minutes, "m")
        local = (
            self.start_utc.astype("datetime64[m]")
            + np.timedelta64(self.market_offset_minutes, "m")
            + step * np.arange(lo, hi)
        )
        return GridFeatures.from_local(local, self.interval_minutes)


@dataclass(frozen=True)
class GridFeatures:
    """Per interval: market day index, slot of day, month (0-11), weekend flag, peak flag, FY.

    ``fy`` is the financial year by its ending calendar year (1 July start: FY2024 is
    2023-07-01..2024-06-30). ``day`` counts market days since 1970-01-01.
    """

    day: IntArray
    slot: IntArray
    month: IntArray
    weekend: NDArray[np.bool_]
    peak: NDArray[np.bool_]
    fy: IntArray
    month_key: IntArray  # months since 1970-01 (distinct calendar months)

    @classmethod
    def from_local(cls, local: NDArray[np.datetime64], interval_minutes: int) -> GridFeatures:
        """Features from market-local interval starts."""
        minutes = local.astype("datetime64[m]").astype(np.int64)
        day = minutes // 1440
        slot = (minutes % 1440) // interval_minutes
        month_key = local.astype("datetime64[M]").astype(np.int64)
        month = month_key % 12
        year = 1970 + month_key // 12
        weekend = ((day + 3) % 7) >= 5  # 1970-01-01 was a Thursday
        hour = (minutes % 1440) // 60
        peak = ~weekend & (hour >= PEAK_START_HOUR) & (hour < PEAK_END_HOUR)
        fy = year + (month >= 6)
        return cls(day, slot, month, weekend, peak, fy, month_key)


def grid_for_period(
    start_local_date: str, n_days: int, interval_minutes: int = 30, market_offset_minutes: int = 600
) -> Grid:
    """The grid covering ``n_days`` market days from a market-local date ``YYYY-MM-DD``."""
    start_utc = np.datetime64(start_local_date, "m") - np.timedelta64(market_offset_minutes, "m")
    return Grid(
        start_utc, interval_minutes, n_days * 1440 // interval_minutes, market_offset_minutes
    )


def floor_cap_for_fy(
    fy: IntArray, caps_by_fy: dict[int, float], floor_per_mwh: float = -1000.0
) -> tuple[float, NDArray[np.float64]]:
    """Market price floor and per-interval cap [$/MWh] from a cap table keyed by FY.

    A financial year beyond the table takes the latest year's cap.
    """
    years = np.array(sorted(caps_by_fy))
    values = np.array([caps_by_fy[y] for y in years])
    idx = np.clip(np.searchsorted(years, fy, side="right") - 1, 0, len(years) - 1)
    return floor_per_mwh, values[idx]
