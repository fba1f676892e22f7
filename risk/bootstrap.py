"""Non-parametric alternative: resample blocks of historical days of joint price and load.

Each simulated block of ``block_days`` starts on a historical day of the same weekday within
``window_days`` of the same day of the year, chosen uniformly per path; the block's days follow
in order, so price and load keep their joint behaviour (weather, spikes, price-volume
correlation) and the weekly cycle. Prices are clipped to the simulated year's floor and cap.
Draws use one generator per block of ``BLOCK_PATHS`` paths (``SeedSequence.spawn``), so the
result does not depend on how paths are grouped.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from risk.calendar import Grid, floor_cap_for_fy
from risk.hedging import MonthlyPriceAggregates
from risk.results import SimulationResult, month_starts, peak_counts
from risk.simulate import BLOCK_PATHS

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def _day_info(grid: Grid) -> tuple[IntArray, IntArray]:
    """Day of year (0-365) and weekday (0 = Monday) of each market day of ``grid``."""
    f = grid.features()
    days = f.day[:: grid.slots_per_day]
    date = days.astype("datetime64[D]")
    doy = (date - date.astype("datetime64[Y]")).astype(np.int64)
    return doy, (days + 3) % 7


def candidate_days(
    hist: Grid, valid_day: NDArray[np.bool_], horizon: Grid, block_days: int, window_days: int
) -> list[IntArray]:
    """For each simulated block start, the historical days a block may start on."""
    h_doy, h_wd = _day_info(hist)
    s_doy, s_wd = _day_info(horizon)
    n_hist = h_doy.size
    ok_block = np.array(
        [valid_day[i : i + block_days].all() and i + block_days <= n_hist for i in range(n_hist)]
    )
    out = []
    for d in range(0, s_doy.size, block_days):
        gap = np.abs(h_doy - s_doy[d])
        gap = np.minimum(gap, 365 - gap)
        cand = np.flatnonzero(ok_block & (gap <= window_days) & (h_wd == s_wd[d]))
        if cand.size == 0:
            cand = np.flatnonzero(ok_block & (gap <= 3 * window_days))
        if cand.size == 0:
            raise ValueError(f"no complete historical block near day of year {s_doy[d]}")
        out.append(cand)
    return out


def simulate_bootstrap(
    price_per_mwh: FloatArray,
    load_kwh: FloatArray,
    hist: Grid,
    horizon: Grid,
    n_paths: int,
    seed: int,
    *,
    caps_by_fy: dict[int, float],
    floor_per_mwh: float = -1000.0,
    cap_strikes: tuple[float, ...] = (300.0,),
    threshold_per_mwh: float = 300.0,
    block_days: int = 7,
    window_days: int = 15,
    keep_paths: int = 0,
) -> SimulationResult:
    """Resample joint historical price [$/MWh] and load [kWh] on ``hist`` over ``horizon``."""
    slots = hist.slots_per_day
    p_days = price_per_mwh.reshape(-1, slots)
    l_days = load_kwh.reshape(-1, slots)
    valid = np.asarray(np.isfinite(p_days).all(axis=1) & np.isfinite(l_days).all(axis=1))
    starts = candidate_days(hist, valid, horizon, block_days, window_days)
    n_days = horizon.n_intervals // slots
    day_idx = np.empty((n_days, n_paths), dtype=np.int64)
    seeds = np.random.SeedSequence(seed).spawn(-(-n_paths // BLOCK_PATHS))
    for b, ss in enumerate(seeds):
        rng = np.random.default_rng(ss)
        cols = slice(b * BLOCK_PATHS, min((b + 1) * BLOCK_PATHS, n_paths))
        width = cols.stop - cols.start
        for k, cand in enumerate(starts):
            first = cand[rng.integers(0, cand.size, width)]
            for j in range(min(block_days, n_days - k * block_days)):
                day_idx[k * block_days + j, cols] = first + j
    return _accumulate_days(
        p_days,
        l_days,
        day_idx,
        horizon,
        caps_by_fy,
        floor_per_mwh,
        cap_strikes,
        threshold_per_mwh,
        keep_paths,
    )


def _accumulate_days(
    p_days: FloatArray,
    l_days: FloatArray,
    day_idx: IntArray,
    horizon: Grid,
    caps_by_fy: dict[int, float],
    floor_per_mwh: float,
    cap_strikes: tuple[float, ...],
    threshold: float,
    keep: int,
) -> SimulationResult:
    slots = horizon.slots_per_day
    n_days, n_paths = day_idx.shape
    months, day_month = month_starts(horizon)
    f = horizon.features()
    _, caps = floor_cap_for_fy(f.fy[::slots], caps_by_fy, floor_per_mwh)
    weekend = f.weekend[::slots]
    hour_slots = slots // 24
    lo, hi = 7 * hour_slots, 22 * hour_slots
    m = len(months)
    z = np.zeros
    price_all, price_peak, cost, energy, e_peak = (z((m, n_paths)) for _ in range(5))
    excess = z((len(cap_strikes), m, n_paths))
    spikes, negatives = z(n_paths), z(n_paths)
    level, driver = z((m, n_paths)), z((m, n_paths))
    mean_price, mean_load = np.nanmean(p_days), np.nanmean(l_days.sum(axis=1))
    kept_p = np.zeros((horizon.n_intervals, keep), dtype=np.float32)
    kept_l = np.zeros((horizon.n_intervals, keep), dtype=np.float32)
    for d in range(n_days):
        mi = int(day_month[d])
        price = np.clip(p_days[day_idx[d]], floor_per_mwh, caps[d])  # (n_paths, slots)
        load = l_days[day_idx[d]]
        if d == 0 or day_month[d - 1] != mi:
            prev = day_idx[d] - 1
            level[mi] = np.nan_to_num(p_days[np.maximum(prev, 0)].mean(axis=1) - mean_price)
            driver[mi] = np.log(
                np.maximum(l_days[np.maximum(prev, 0)].sum(axis=1), 1e-9) / mean_load
            )
        price_all[mi] += price.sum(axis=1)
        if not weekend[d]:
            price_peak[mi] += price[:, lo:hi].sum(axis=1)
            e_peak[mi] += load[:, lo:hi].sum(axis=1)
        cost[mi] += np.einsum("ps,ps->p", price, load) / 1000.0
        energy[mi] += load.sum(axis=1)
        for s, k in enumerate(cap_strikes):
            excess[s, mi] += np.maximum(price - k, 0.0).sum(axis=1)
        spikes += (price > threshold).sum(axis=1)
        negatives += (price < 0).sum(axis=1)
        if keep:
            kept_p[d * slots : (d + 1) * slots] = price[:keep].T
            kept_l[d * slots : (d + 1) * slots] = load[:keep].T
    agg = MonthlyPriceAggregates(
        months,
        horizon.hours_per_interval,
        np.bincount(day_month, minlength=m) * slots,
        peak_counts(horizon, day_month, m, (lo, hi)),
        price_all,
        price_peak,
        list(cap_strikes),
        excess,
    )
    zeros = np.zeros(n_paths)
    return SimulationResult(
        horizon,
        agg,
        cost,
        energy,
        e_peak,
        spikes,
        negatives,
        zeros,
        zeros,
        level,
        np.zeros((m, n_paths)),
        driver,
        np.arange(n_paths),
        kept_p,
        kept_l,
    )
