"""Containers of a simulation: the joint model, per-path results and the streaming accumulators.

Accumulation works on one market day of paths at a time (``(blocks, slots, paths)`` arrays); one
weighted contraction gives the price sums (all and peak intervals) and the load-weighted price sum.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from risk.calendar import Grid
from risk.hedging import MonthlyPriceAggregates
from risk.load_model import LoadModelParams
from risk.price_model import PriceModelParams

FloatArray = NDArray[np.float64]
Sampler = Literal["pseudo", "sobol"]


@dataclass
class MarketModel:
    """Price model, cohort load model and the correlation of their daily innovations."""

    price: PriceModelParams
    load: LoadModelParams
    rho_level_driver: float = 0.0

    def to_dict(self) -> dict[str, object]:
        """JSON-ready parameters."""
        return {
            "price": self.price.to_dict(),
            "load": self.load.to_dict(),
            "rho_level_driver": self.rho_level_driver,
        }


@dataclass
class SimulationResult:
    """Per-path results of a simulation.

    Monthly arrays are ``(n_months, n_paths)``: ``cost_aud`` wholesale cost of the cohort's
    average customer [$], ``energy_kwh``, ``energy_peak_kwh`` (weekday 07-22 market time);
    ``level_at_month_start`` (daily deviation [$/MWh]),
    ``slow_at_month_start`` (log) and ``driver_at_month_start`` are the daily factors on each
    month's first day (LSM states). Per path: ``spike_intervals``,
    ``negative_intervals``, ``spike_events`` and their conditional expectation
    ``spike_events_expected`` (their difference has mean zero: a control variate). ``groups``
    labels independent replicates (antithetic pairs or 64-path Sobol point sets) for standard
    errors.
    ``kept_price_per_mwh`` / ``kept_load_kwh`` hold the first ``keep_paths`` full paths.
    """

    grid: Grid
    prices: MonthlyPriceAggregates
    cost_aud: FloatArray
    energy_kwh: FloatArray
    energy_peak_kwh: FloatArray
    spike_intervals: FloatArray
    negative_intervals: FloatArray
    spike_events: FloatArray
    spike_events_expected: FloatArray
    level_at_month_start: FloatArray
    slow_at_month_start: FloatArray
    driver_at_month_start: FloatArray
    groups: NDArray[np.int64]
    kept_price_per_mwh: NDArray[np.float32]
    kept_load_kwh: NDArray[np.float32]

    @property
    def n_paths(self) -> int:
        """Number of simulated paths."""
        return int(self.cost_aud.shape[1])


def month_starts(grid: Grid) -> tuple[list[dt.date], NDArray[np.int64]]:
    """First day of each simulated month and each market day's month index."""
    f = grid.features()
    day_month = f.month_key[:: grid.slots_per_day]
    keys = np.unique(day_month)
    months = [dt.date(1970 + int(k) // 12, int(k) % 12 + 1, 1) for k in keys]
    return months, np.searchsorted(keys, day_month)


@dataclass
class Accumulators:
    """Accumulators for all paths (filled chunk by chunk)."""

    price_all: FloatArray
    price_peak: FloatArray
    cap_excess: FloatArray
    cost: FloatArray
    energy: FloatArray
    energy_peak: FloatArray
    spikes: FloatArray
    negatives: FloatArray
    events: FloatArray
    events_expected: FloatArray
    level_ms: FloatArray
    slow_ms: FloatArray
    driver_ms: FloatArray
    kept_price: NDArray[np.float32]
    kept_load: NDArray[np.float32]

    @classmethod
    def zeros(
        cls, n_months: int, n_paths: int, n_strikes: int, n_int: int, keep: int
    ) -> Accumulators:
        z = np.zeros
        return cls(
            z((n_months, n_paths)),
            z((n_months, n_paths)),
            z((n_strikes, n_months, n_paths)),
            z((n_months, n_paths)),
            z((n_months, n_paths)),
            z((n_months, n_paths)),
            z(n_paths),
            z(n_paths),
            z(n_paths),
            z(n_paths),
            z((n_months, n_paths)),
            z((n_months, n_paths)),
            z((n_months, n_paths)),
            np.zeros((n_int, keep), dtype=np.float32),
            np.zeros((n_int, keep), dtype=np.float32),
        )


@dataclass(frozen=True)
class SimSettings:
    """Engine options resolved from :class:`risk.settings.SimulationSettings`."""

    floor_per_mwh: float
    cap_per_mwh_by_day: FloatArray
    cap_strikes: tuple[float, ...]
    antithetic: bool
    sampler: Sampler
    keep_paths: int
    peak_slots: tuple[int, int]
    load_uplift: float
    draw_ahead: bool = True


def peak_counts(
    grid: Grid, day_month: NDArray[np.int64], n_months: int, peak: tuple[int, int]
) -> NDArray[np.int64]:
    weekday = ~grid.features().weekend[:: grid.slots_per_day]
    return np.bincount(day_month, weights=weekday * (peak[1] - peak[0]), minlength=n_months).astype(
        np.int64
    )


def accumulate(
    price: NDArray[np.float32],
    load_shape: FloatArray,
    driver_scale: FloatArray,
    cells: tuple[NDArray[np.int64], ...],
    weekend: bool,
    mi: int,
    cols: slice,
    cfg: SimSettings,
    acc: Accumulators,
) -> None:
    """Monthly sums: price (all, peak), cost and energy (load = shape x driver, uplifted in
    spike cells), cap excess. One weighted contraction gives the three slot sums."""
    slots = price.shape[1]
    weights = np.zeros((3, slots), dtype=price.dtype)
    weights[0] = 1.0
    if not weekend:
        weights[1, cfg.peak_slots[0] : cfg.peak_slots[1]] = 1.0
    weights[2] = load_shape
    # einsum's own loops, not BLAS: BLAS kernels may round differently with buffer alignment,
    # which would break bit-for-bit reproducibility
    sums = np.einsum("rs,ksj->krj", weights, price)  # (K, 3, nb)
    acc.price_all[mi, cols] += sums[:, 0].reshape(-1)
    acc.price_peak[mi, cols] += sums[:, 1].reshape(-1)
    cost = sums[:, 2] * driver_scale
    energy = load_shape.sum() * driver_scale
    energy_peak = float(load_shape @ weights[1]) * driver_scale
    if cells[0].size and cfg.load_uplift:
        k, r, j = cells
        extra = load_shape[r] * driver_scale[k, j] * cfg.load_uplift
        np.add.at(cost, (k, j), extra * price[cells])
        np.add.at(energy, (k, j), extra)
        np.add.at(energy_peak, (k, j), extra * weights[1, r])
    acc.cost[mi, cols] += cost.reshape(-1) / 1000.0
    acc.energy[mi, cols] += energy.reshape(-1)
    acc.energy_peak[mi, cols] += energy_peak.reshape(-1)
    k_blocks, _, nb = price.shape
    flat = price.reshape(-1)
    for s, strike in enumerate(cfg.cap_strikes):
        # exceedances are sparse: gather them instead of three passes over the whole day;
        # a 1-D flatnonzero is ~20x faster than a 3-D nonzero (one index array, not three)
        idx = np.flatnonzero(flat > strike)
        excess = flat[idx].astype(np.float64) - strike
        path = idx // (slots * nb) * nb + idx % nb
        acc.cap_excess[s, mi, cols] += np.bincount(path, excess, minlength=k_blocks * nb)


def count_extremes(
    price: NDArray[np.float32], cols: slice, acc: Accumulators, threshold: float
) -> None:
    """Per-path counts of spike (above ``threshold``) and negative intervals of the day."""
    # int16 is ample for one day's slots (<= 288) and three times faster than int64 here
    acc.spikes[cols] += np.add.reduce(price > threshold, axis=1, dtype=np.int16).reshape(-1)
    acc.negatives[cols] += np.add.reduce(price < 0.0, axis=1, dtype=np.int16).reshape(-1)
