"""The spike load uplift: once per spike cell, on the load grid whatever the price history."""

from __future__ import annotations

import numpy as np
import pytest
from test_risk_model import CAPS, synthetic_model

from risk.calendar import grid_for_period
from risk.simulate import simulate_market


@pytest.mark.parametrize("spike_model", ["regime_switching", "jump_ou"])
def test_accumulated_cost_equals_kept_paths_with_overlapping_spikes(spike_model: str) -> None:
    """Monthly cost and energy sums equal price x load summed over the kept full paths.

    With 20x the evening spike rate events overlap; a cell hit by two events was uplifted twice
    in the sums (np.add.at once per duplicate) but once in the kept paths: cost differed by up
    to 2.5% (spike_scale 20, 1024 paths, a year). Float32 kept paths agree to ~1e-7."""
    sim = simulate_market(
        synthetic_model(spike_model, spike_scale=20.0),
        grid_for_period("2024-07-01", 90),
        64,
        5,
        caps_by_fy=CAPS,
        keep_paths=64,
    )
    load = sim.kept_load_kwh.astype(float)
    price = sim.kept_price_per_mwh.astype(float)
    np.testing.assert_allclose(sim.energy_kwh.sum(axis=0), load.sum(axis=0), rtol=1e-5)
    np.testing.assert_allclose(
        sim.cost_aud.sum(axis=0), (load * price).sum(axis=0) / 1000, rtol=1e-5
    )


def test_uplift_fitted_when_meter_data_spans_part_of_the_price_history() -> None:
    """Load on the last 300 days of a 426-day price history: the uplift is fitted from the
    prices of those 300 days, the same as when both series cover just those days. It was 0 (not
    fitted) whenever the grids differed; the true uplift is 0.3 (0.22 fitted on the full span,
    diluted by base prices above the threshold)."""
    from risk.calendar import Grid
    from risk.settings import RiskSettings
    from settlement.risk_inputs import calibrate_from_arrays

    grid = grid_for_period("2023-05-01", 426)
    hist = simulate_market(
        synthetic_model(spike_scale=3.0), grid, 2, 3, caps_by_fy=CAPS, keep_paths=1
    )
    price = hist.kept_price_per_mwh[:, 0].astype(float)
    load = hist.kept_load_kwh[:, 0].astype(float)
    n = 300 * 48
    tail = Grid(grid.start_utc + np.timedelta64((grid.n_intervals - n) * 30, "m"), 30, n, 600)
    settings = RiskSettings()
    partial = calibrate_from_arrays(grid, price, tail, load[-n:], settings)
    same = calibrate_from_arrays(tail, price[-n:], tail, load[-n:], settings)
    assert same.load.spike_uplift > 0.1
    assert partial.load.spike_uplift == pytest.approx(same.load.spike_uplift, rel=1e-12)
