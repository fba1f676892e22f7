"""Re-entry figures per customer-year and per kWh on horizons that are not 12 calendar months."""

from __future__ import annotations

import numpy as np
import pytest
from test_risk_model import CAPS, synthetic_model

from risk.calendar import grid_for_period
from risk.pricing import reentry_cost_function
from risk.reentry import ReentryInputs, value_reentry
from risk.settings import ReentrySettings, RiskSettings
from risk.simulate import SimulationResult, simulate_market


def _per_year_and_kwh(sim: SimulationResult) -> tuple[float, float, float, float]:
    """Reported per-year and per-kWh rational values, and the same from first principles:
    value over the horizon / (horizon days / 365) and value / mean kWh over the horizon."""
    s = ReentrySettings()
    inputs = ReentryInputs.from_simulation(sim, s)
    avg = float((sim.cost_aud.sum(0) / sim.energy_kwh.sum(0)).mean())
    v = value_reentry(inputs, avg + 0.11, s)
    row = v.to_dict()["rational_in_sample"]
    assert isinstance(row, dict)
    days = sim.grid.n_intervals / sim.grid.slots_per_day
    value = v.rational_in_sample.value
    expect_year = value / (days / 365.0)
    expect_kwh = value / float(sim.energy_kwh.sum(axis=0).mean())
    return (
        row["aud_per_customer_year"]["value"],
        row["aud_per_kwh"]["value"],
        expect_year,
        expect_kwh,
    )


@pytest.mark.parametrize(
    ("start", "days"),
    [
        ("2024-07-01", 365),  # 12 whole months: unchanged
        ("2024-07-01", 730),  # per kWh was half the true figure (0.00435 vs 0.00870 $/kWh)
        (
            "2024-07-15",
            365,
        ),  # 13 calendar months: per year 53.82 vs 58.30, per kWh 0.00781 vs 0.00846
    ],
)
def test_reentry_per_year_and_per_kwh(start: str, days: int) -> None:
    sim = simulate_market(synthetic_model(), grid_for_period(start, days), 256, 17, caps_by_fy=CAPS)
    per_year, per_kwh, expect_year, expect_kwh = _per_year_and_kwh(sim)
    assert per_year == pytest.approx(expect_year, rel=1e-9)
    assert per_kwh == pytest.approx(expect_kwh, rel=1e-9)


def test_upfront_charge_netted_per_horizon_year() -> None:
    """A 30 $/yr up-front charge over a 365-day horizon from mid-July (13 calendar months) nets
    30 $, not 32.50 $ (13/12 years), from the option value per dynamic customer."""
    sim = simulate_market(
        synthetic_model(), grid_for_period("2024-07-15", 365), 256, 17, caps_by_fy=CAPS
    )
    settings = RiskSettings(caps_by_fy=CAPS)
    r = settings.reentry.model_copy(update={"upfront_charge_aud": 30.0})
    charged = settings.model_copy(update={"reentry": r})
    inputs = ReentryInputs.from_simulation(sim, r)
    avg = float((sim.cost_aud.sum(0) / sim.energy_kwh.sum(0)).mean())
    rate = avg + 0.11
    value = value_reentry(inputs, rate, r).rational_in_sample.value
    assert value > 30.0  # the charge does not floor the net cost at zero here
    cost = reentry_cost_function(sim, charged)(rate)
    expect = (value - 30.0) * r.dynamic_customers_per_safe_harbour
    assert cost == pytest.approx(expect, rel=1e-9)
    assert np.isfinite(cost)
