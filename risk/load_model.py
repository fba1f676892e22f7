"""Cohort load model: shape x daily demand driver x spike uplift.

``L[t] = S_L[m, w, s] exp(x[d]) (1 + u 1{spike[t]})`` per customer [kWh per interval], where
``x`` is the daily demand driver (a daily OU: the stand-in for temperature) shared with the price
model's spike intensity, and ``u`` the average uplift of load in spike intervals. Together with
the correlation of the driver's and the price level's daily innovations, this reproduces the
price-volume correlation that makes retail load costly to hedge (DOMAIN.md section 6).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from risk.calendar import Grid
from risk.ou import OUParams, calibrate_ou
from risk.price_model import _cell_mean, shape_index

FloatArray = NDArray[np.float64]


@dataclass
class LoadModelParams:
    """Fitted load model of one cohort (per average customer).

    ``shape_kwh`` (12, 2, slots); ``driver`` the daily OU of the log driver (time unit: day),
    ``driver_now`` its last value; ``spike_uplift`` fractional uplift in spike intervals.
    """

    interval_minutes: int
    shape_kwh: FloatArray
    driver: OUParams
    driver_now: float
    spike_uplift: float
    annual_kwh: float
    label: str = ""

    def to_dict(self) -> dict[str, object]:
        """JSON-ready parameters."""
        return {
            "interval_minutes": self.interval_minutes,
            "shape_kwh": self.shape_kwh.tolist(),
            "driver_ou_per_day": self.driver.to_dict(),
            "driver_now": self.driver_now,
            "spike_uplift": self.spike_uplift,
            "annual_kwh": self.annual_kwh,
            "label": self.label,
        }


def calibrate_load_model(
    load_kwh: FloatArray,
    grid: Grid,
    spike_mask: NDArray[np.bool_] | None = None,
    label: str = "",
) -> tuple[LoadModelParams, FloatArray]:
    """Fit the load model to an average-customer load series on ``grid`` (NaN = missing).

    Two passes, as the price model's shape: the shape as the cell mean of load; ``x[d]`` the
    centred log ratio of the day's mean load to the shape's mean; the shape refitted as the cell
    mean of ``load / exp(x)``. The simulated load ``shape x exp(X)`` then has the history's mean
    (``E[exp(X)]`` is held once, by the driver, not also by the shape).

    Returns the parameters and the daily driver ``x`` (one value per market day of the grid,
    NaN where the day has no data), to be shared with the price model.
    """
    f = grid.features()
    slots = grid.slots_per_day
    idx = shape_index(f, slots)
    day_idx = f.day - f.day[0]
    n_days = int(day_idx[-1]) + 1
    fallback = float(np.nanmean(load_kwh))
    shape = _cell_mean(load_kwh, idx, 24 * slots)
    shape = np.where(np.isfinite(shape), shape, fallback)
    for _ in range(2):
        ratio = _cell_mean(load_kwh, day_idx, n_days) / _cell_mean(shape[idx], day_idx, n_days)
        x = np.log(np.where(ratio > 0, ratio, np.nan))
        x = x - np.nanmean(x)
        # the shape is the cell mean of load / exp(x): the simulation multiplies it by exp(x),
        # so a shape holding the cell mean of load itself would count E[exp(x)] twice
        shape = _cell_mean(load_kwh / np.exp(np.nan_to_num(x))[day_idx], idx, 24 * slots)
        shape = np.where(np.isfinite(shape), shape, fallback)
    ok = np.isfinite(x[:-1]) & np.isfinite(x[1:])
    driver = calibrate_ou(np.nan_to_num(x), 1.0, ok) if ok.sum() > 5 else OUParams(0.2, 0.0, 0.05)
    expected = shape[idx] * np.exp(np.nan_to_num(x))[day_idx]
    uplift = 0.0
    if spike_mask is not None:
        sel = spike_mask & np.isfinite(load_kwh)
        if sel.sum() >= 5:
            uplift = float(np.clip(load_kwh[sel].sum() / expected[sel].sum() - 1.0, -0.5, 2.0))
    finite = np.flatnonzero(np.isfinite(x))
    params = LoadModelParams(
        interval_minutes=grid.interval_minutes,
        shape_kwh=shape.reshape(12, 2, slots),
        driver=driver,
        driver_now=float(np.mean(x[finite[-7:]])) if finite.size else 0.0,
        spike_uplift=uplift,
        annual_kwh=float(np.nanmean(load_kwh) * 365 * slots),
        label=label,
    )
    return params, x


def innovation_correlation(level_daily: FloatArray, driver_daily: FloatArray) -> float:
    """Correlation of the AR(1) innovations of two daily series on the same days."""
    a, b = np.asarray(level_daily, float), np.asarray(driver_daily, float)
    ok = np.isfinite(a[:-1]) & np.isfinite(a[1:]) & np.isfinite(b[:-1]) & np.isfinite(b[1:])
    if ok.sum() < 10:
        return 0.0

    def innov(s: FloatArray) -> FloatArray:
        x0, x1 = s[:-1][ok], s[1:][ok]
        design = np.column_stack([np.ones_like(x0), x0])
        coef, *_ = np.linalg.lstsq(design, x1, rcond=None)
        return np.asarray(x1 - design @ coef)

    return float(np.clip(np.corrcoef(innov(a), innov(b))[0, 1], -0.99, 0.99))
