"""The load model's simulated mean equals the history's mean (no double-counted exp(sigma^2/2))."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_risk_model import CAPS, synthetic_model

from risk.calendar import grid_for_period
from risk.load_model import calibrate_load_model
from risk.ou import OUParams, simulate_ou
from risk.simulate import MarketModel, simulate_market


@pytest.mark.parametrize("seed", [1])
def test_simulated_daily_load_mean_matches_history(seed: int) -> None:
    """History: a fixed half-hourly shape S times exp(x[d]), x a daily OU (kappa 0.3/day,
    stationary sd 0.3), three years. Simulate 512 paths of the calibrated model for a year (no
    spikes, driver started at 0) and compare the mean daily kWh with the history's.

    Before the fix the shape was the raw cell mean of load, which already holds E[exp(x)], and
    the simulation multiplied by exp(x) again: +3.9% = exp(0.28^2 / 2) - 1 (history 17.33
    kWh/day, simulation 18.00 +- 0.014, seed 1). The tolerance, 1% plus 3 Monte Carlo standard
    errors, covers the fitted OU's sampling error (stationary sd 0.28-0.30 -> +-0.3%)."""
    rng = np.random.default_rng(seed)
    days = 3 * 365
    slot = np.arange(48)
    shape = 0.3 + 0.3 * np.exp(-0.5 * ((slot - 37) / 4.0) ** 2)
    kappa, sd = 0.3, 0.3
    x = simulate_ou(OUParams(kappa, 0.0, sd * np.sqrt(2 * kappa)), 0.0, 1.0, days - 1, 1, rng)
    load = (shape[None, :] * np.exp(x[:, 0])[:, None]).reshape(-1)
    hist_daily = float(load.reshape(days, 48).sum(axis=1).mean())
    params, _ = calibrate_load_model(load, grid_for_period("2021-07-01", days))
    params = dataclasses.replace(params, driver_now=0.0)
    base = synthetic_model()
    no_spikes = dataclasses.replace(
        base.price.spikes, start_prob=np.zeros_like(base.price.spikes.start_prob)
    )
    model = MarketModel(dataclasses.replace(base.price, spikes=no_spikes), params, 0.0)
    sim = simulate_market(model, grid_for_period("2024-07-01", 365), 512, 3, caps_by_fy=CAPS)
    per_path = sim.energy_kwh.sum(axis=0) / 365
    se = float(per_path.std(ddof=1) / np.sqrt(per_path.size))
    assert abs(float(per_path.mean()) - hist_daily) < 0.01 * hist_daily + 3 * se
