"""Wholesale price model: shape x slow level factor + fast OU base + spike layer, clipped.

``P[t] = clip(S[m, w, s] exp(y[d]) + V[m, s] Z[t] + spike[t], floor, cap[fy])`` where ``S`` is
the seasonal and intraday shape by month ``m``, day type ``w`` and slot ``s``; ``y`` a slow daily
OU (the long-term level factor); ``Z`` a unit fast OU at interval resolution scaled by a
slot-dependent volatility ``V``; and ``spike`` the spike layer (see :mod:`risk.spikes`), whose
arrival intensity depends on month and hour and rises with the level factor and with a daily
demand driver shared with the load model. Calibration is by moments and AR(1) regressions
(DOMAIN.md section 6).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy import optimize

from risk.calendar import Grid, GridFeatures
from risk.ou import OUParams, calibrate_ou, fit_ar1, ou_from_ar1
from risk.spikes import SpikeParams, calibrate_spikes

FloatArray = NDArray[np.float64]
SpikeModel = Literal["regime_switching", "jump_ou"]


@dataclass
class PriceModelParams:
    """Fitted parameters of the price model (arrays in $/MWh unless named otherwise).

    ``shape_per_mwh`` (12, 2, slots) by month, weekday/weekend, slot; ``vol_per_mwh`` (12, slots);
    ``fast`` the unit OU of the base (time unit: day). ``slow`` is the OU of the slow log level
    factor (fitted to monthly means, time unit: day), which scales the shape and the base noise;
    ``level`` the OU of the additive daily deviation [$/MWh]; ``slow_now`` and ``level_now``
    their values at the end of the calibration window. ``spikes`` is the spike layer;
    ``gamma_slow``, ``gamma_level`` (per 100 $/MWh of daily deviation) and ``gamma_driver`` the
    log-sensitivities of the spike intensity to the slow factor, the daily deviation and the
    daily demand driver.
    """

    interval_minutes: int
    shape_per_mwh: FloatArray
    vol_per_mwh: FloatArray
    fast: OUParams
    level: OUParams
    level_now: float
    spikes: SpikeParams
    slow: OUParams = field(default_factory=lambda: OUParams(0.01, 0.0, 0.0))
    slow_now: float = 0.0
    gamma_slow: float = 0.0
    gamma_level: float = 0.0
    gamma_driver: float = 0.0
    intensity_log_norm: float = 0.0
    calibrated_from: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready parameters."""
        return {
            "interval_minutes": self.interval_minutes,
            "shape_per_mwh": self.shape_per_mwh.tolist(),
            "vol_per_mwh": self.vol_per_mwh.tolist(),
            "fast_ou_per_day": self.fast.to_dict(),
            "level_ou_per_day": self.level.to_dict(),
            "level_now": self.level_now,
            "slow_ou_per_day": self.slow.to_dict(),
            "slow_now": self.slow_now,
            "gamma_slow": self.gamma_slow,
            "spikes": self.spikes.to_dict(),
            "gamma_level": self.gamma_level,
            "gamma_driver": self.gamma_driver,
            "intensity_log_norm": self.intensity_log_norm,
            "calibrated_from": self.calibrated_from,
            "notes": self.notes,
        }


def _cell_mean(values: FloatArray, index: NDArray[np.int64], size: int) -> FloatArray:
    ok = np.isfinite(values)
    sums = np.bincount(index[ok], weights=values[ok], minlength=size)
    counts = np.bincount(index[ok], minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _fill_cells(cells: FloatArray, axis_fallback: float | FloatArray) -> FloatArray:
    return np.where(np.isfinite(cells), cells, axis_fallback)


def shape_index(f: GridFeatures, slots: int) -> NDArray[np.int64]:
    """Flat index of (month, day type, slot) cells."""
    return (f.month * 2 + f.weekend.astype(np.int64)) * slots + f.slot


def _daily_mean(values: FloatArray, day_idx: NDArray[np.int64], n_days: int) -> FloatArray:
    return _cell_mean(values, day_idx, n_days)


def fit_shape_and_level(
    price: FloatArray, base_mask: NDArray[np.bool_], f: GridFeatures, slots: int
) -> tuple[FloatArray, FloatArray]:
    """Shape by (month, day type, slot) and the daily log level factor ``y``.

    Two passes: the shape as the cell mean of base (non-spike) prices; ``y[d]`` the log ratio of
    the day's mean base price to the shape's mean (clipped to [1/20, 20]); the shape refitted on
    prices divided by ``exp(y)``.
    """
    idx = shape_index(f, slots)
    day_idx = f.day - f.day[0]
    n_days = int(day_idx[-1]) + 1
    base = np.where(base_mask, price, np.nan)
    fallback = float(np.nanmean(base))
    shape = _fill_cells(_cell_mean(base, idx, 24 * slots), fallback)
    y = np.zeros(n_days)
    for _ in range(2):
        ratio = _daily_mean(base, day_idx, n_days) / _daily_mean(shape[idx], day_idx, n_days)
        ratio = np.where(np.isfinite(ratio) & (ratio > 0), ratio, np.nan)
        y = np.log(np.clip(ratio, 0.05, 20.0))
        y = y - np.nanmean(y)
        scaled = base / np.exp(np.nan_to_num(y, nan=0.0))[day_idx]
        shape = _fill_cells(_cell_mean(scaled, idx, 24 * slots), fallback)
    return shape.reshape(12, 2, slots), y


def fit_base_ou(
    price: FloatArray,
    base_mask: NDArray[np.bool_],
    fitted: FloatArray,
    level_scale: FloatArray,
    f: GridFeatures,
    dt: float,
) -> tuple[FloatArray, OUParams]:
    """Slot volatility ``V[m, s]`` and the unit fast OU of ``(P - fitted) / (V exp(y))``.

    The base noise scales with the level factor ``exp(y)`` (``level_scale``), so a high-price
    regime is also a volatile one; its persistence is fitted by AR(1).
    """
    slots = int(f.slot.max()) + 1
    resid = np.where(base_mask, (price - fitted) / level_scale, np.nan)
    idx = f.month * slots + f.slot
    mean_sq = _cell_mean(resid**2, idx, 12 * slots)
    overall = float(np.sqrt(np.nanmean(resid**2))) if np.isfinite(resid).any() else 0.0
    vol = np.sqrt(_fill_cells(mean_sq, overall**2))
    vol = np.where(vol > 1e-9, vol, max(overall, 1e-3))  # flat cells (e.g. constant demo prices)
    z = resid / vol[idx]
    _c, a, _sd_e = fit_ar1(z, base_mask[:-1] & base_mask[1:])
    # Z is unit-variance by construction: set sigma so the stationary variance is 1.
    fast = ou_from_ar1(0.0, a, np.sqrt(1.0 - min(a, 0.9999) ** 2), dt)
    return vol.reshape(12, slots), fast


def fit_intensity_sensitivity(
    counts: FloatArray, expected: FloatArray, covariates: FloatArray
) -> tuple[FloatArray, float]:
    """Poisson regression of daily spike starts on daily covariates (log link).

    ``counts[d] ~ Poisson(expected[d] exp(g . x[d] - log_norm))`` where ``log_norm`` makes the
    fitted total equal the observed one. Returns ``(g, log_norm)``; days with a missing
    covariate are left out.
    """
    x = np.atleast_2d(np.asarray(covariates, dtype=float).T).T
    ok = np.isfinite(x).all(axis=1) & np.isfinite(expected) & (expected > 0)
    c, e, xx = counts[ok], expected[ok], x[ok]
    if c.sum() < 5 or np.all(xx.std(axis=0) == 0):
        return np.zeros(x.shape[1]), 0.0

    def nll(g: FloatArray) -> float:
        eta = xx @ g
        log_norm = np.log(np.sum(e * np.exp(eta)) / np.sum(c))
        lam = e * np.exp(eta - log_norm)
        return float(np.sum(lam - c * np.log(lam + 1e-300)))

    res = optimize.minimize(
        nll, np.zeros(x.shape[1]), method="L-BFGS-B", bounds=[(-5, 5)] * x.shape[1]
    )
    g = np.asarray(res.x)
    return g, float(np.log(np.sum(e * np.exp(xx @ g)) / np.sum(e)))


def fit_slow_factor(
    y: FloatArray, month_key_daily: NDArray[np.int64], days_per_month: float = 30.44
) -> tuple[FloatArray, OUParams]:
    """Slow level factor: monthly means of the daily log level ``y`` and their OU.

    Returns the slow factor on each day (its month's mean) and the OU fitted by AR(1) on the
    monthly series with ``dt = days_per_month`` (time unit: day).
    """
    keys, inv = np.unique(month_key_daily, return_inverse=True)
    monthly = _cell_mean(y, inv, keys.size)
    monthly = np.where(np.isfinite(monthly), monthly, np.nanmean(monthly))
    try:
        slow = calibrate_ou(monthly, days_per_month)
    except ValueError:
        slow = OUParams(1.0 / 90.0, 0.0, 0.0)
    return monthly[inv], slow


@dataclass
class _BaseFit:
    shape: FloatArray
    y: FloatArray
    slow_daily: FloatArray
    slow: OUParams
    q: FloatArray
    level: OUParams
    level_scale: FloatArray
    fitted: FloatArray
    vol: FloatArray
    fast: OUParams


def _fit_base(
    price: FloatArray, base_mask: NDArray[np.bool_], f: GridFeatures, slots: int, dt: float
) -> _BaseFit:
    shape, y = fit_shape_and_level(price, base_mask, f, slots)
    day_idx = f.day - f.day[0]
    slow_daily, slow = fit_slow_factor(y, f.month_key[::slots])
    level_scale = np.exp(np.nan_to_num(slow_daily))[day_idx]
    seasonal = shape.reshape(-1)[shape_index(f, slots)] * level_scale
    # the daily deviation is additive [$/MWh]: a scaled shape would blow up negative midday
    # prices on expensive days
    base = np.where(base_mask, price - seasonal, np.nan)
    q = _cell_mean(base, day_idx, int(day_idx[-1]) + 1)
    level_ok = np.isfinite(q[:-1]) & np.isfinite(q[1:])
    level = calibrate_ou(np.nan_to_num(q), 1.0, level_ok)
    fitted = seasonal + np.nan_to_num(q)[day_idx]
    vol, fast = fit_base_ou(price, base_mask, fitted, level_scale, f, dt)
    return _BaseFit(shape, y, slow_daily, slow, q, level, level_scale, fitted, vol, fast)


def calibrate_price_model(
    price_per_mwh: FloatArray,
    grid: Grid,
    *,
    spike_model: SpikeModel = "regime_switching",
    spike_threshold_per_mwh: float = 300.0,
    driver_daily: FloatArray | None = None,
    spike_sigmas: float = 3.0,
    label: str = "",
) -> tuple[PriceModelParams, FloatArray]:
    """Fit the price model to a price series on ``grid`` (NaN marks missing intervals).

    Parameters
    ----------
    price_per_mwh : prices [$/MWh] on the grid.
    grid : the regular grid of ``price_per_mwh``.
    spike_model : ``"regime_switching"`` or ``"jump_ou"`` (see :mod:`risk.spikes`).
    spike_threshold_per_mwh : intervals above this price are spike intervals [$/MWh] when
        they are also ``spike_sigmas`` base standard deviations above the fitted base.
    driver_daily : optional daily demand driver (one value per market day of the grid, NaN where
        unknown); the spike intensity's sensitivity to it is fitted when given.

    Returns
    -------
    The parameters and the daily log level factor ``y`` (one value per market day).
    """
    f = grid.features()
    slots = grid.slots_per_day
    dt = grid.interval_minutes / 1440.0
    valid = np.isfinite(price_per_mwh)
    spike = valid & (price_per_mwh > spike_threshold_per_mwh)
    base = _fit_base(price_per_mwh, valid & ~spike, f, slots, dt)
    # A spike is an outlier above the threshold, not a high-priced base: refit without them.
    noise = base.vol.reshape(-1)[f.month * slots + f.slot] * base.level_scale
    spike &= price_per_mwh > base.fitted + spike_sigmas * noise
    base = _fit_base(price_per_mwh, valid & ~spike, f, slots, dt)
    shape, y, slow_daily, slow, q = base.shape, base.y, base.slow_daily, base.slow, base.q
    level, fitted, vol, fast = base.level, base.fitted, base.vol, base.fast
    day_idx = f.day - f.day[0]
    covariates = [slow_daily, q / 100.0]
    if driver_daily is not None:
        covariates.append(np.asarray(driver_daily, dtype=float))
    x_daily = np.column_stack(covariates)
    weight = np.ones(price_per_mwh.size)
    for _ in range(4):  # start profile and intensity sensitivities, fitted alternately
        spikes = calibrate_spikes(
            price_per_mwh,
            spike,
            valid,
            f,
            fitted,
            spike_model,
            slots,
            spike_threshold_per_mwh,
            at_risk_weight=weight,
        )
        starts_day, expected_day = _daily_spike_counts(spike, valid, f, spikes, slots)
        gammas, log_norm = fit_intensity_sensitivity(starts_day, expected_day, x_daily)
        eta = np.nan_to_num(x_daily @ gammas) - log_norm
        weight = np.exp(eta)[day_idx]
    last = np.flatnonzero(np.isfinite(q))
    return PriceModelParams(
        interval_minutes=grid.interval_minutes,
        shape_per_mwh=shape,
        vol_per_mwh=vol,
        fast=fast,
        level=level,
        level_now=float(np.mean(q[last[-7:]])) if last.size else 0.0,
        spikes=spikes,
        slow=slow,
        slow_now=float(slow_daily[np.isfinite(slow_daily)][-1]),
        gamma_slow=float(gammas[0]),
        gamma_level=float(gammas[1]),
        gamma_driver=float(gammas[2]) if gammas.size > 2 else 0.0,
        intensity_log_norm=log_norm,
        calibrated_from=label,
    ), y


def _daily_spike_counts(
    spike: NDArray[np.bool_],
    valid: NDArray[np.bool_],
    f: GridFeatures,
    spikes: SpikeParams,
    slots: int,
) -> tuple[FloatArray, FloatArray]:
    starts = spike & ~np.concatenate([[False], spike[:-1]])
    day_idx = f.day - f.day[0]
    n_days = int(day_idx[-1]) + 1
    counts = np.bincount(day_idx, weights=starts.astype(float), minlength=n_days)
    p = spikes.start_prob[f.month, f.slot * 24 // slots]
    expected = np.bincount(day_idx, weights=np.where(valid & ~spike, p, 0.0), minlength=n_days)
    return counts.astype(float), expected.astype(float)
