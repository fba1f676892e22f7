"""Hedge book, re-entry option and safe-harbour price on simulated paths."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from test_risk_model import CAPS, synthetic_model

from risk.calendar import grid_for_period
from risk.hedging import HedgeBook, HedgeInstrument, book_payoffs_aud
from risk.pricing import price_safe_harbour
from risk.reentry import ReentryInputs, value_reentry
from risk.safe_harbour import solve_safe_harbour_rate
from risk.settings import HedgeSettings, ReentrySettings, RiskSettings
from risk.simulate import SimulationResult, simulate_market
from risk.stats import mc_mean
from risk.valuation import value_hedge_book

START = dt.date(2024, 7, 1)


@pytest.fixture(scope="module")
def sim() -> SimulationResult:
    return simulate_market(
        synthetic_model(),
        grid_for_period("2024-07-01", 365),
        2048,
        17,
        caps_by_fy=CAPS,
        keep_paths=4,
    )


def _book(strike: float = 90.0) -> HedgeBook:
    def inst(name: str, kind: str, mw: float, k: float, prem: float = 0.0) -> HedgeInstrument:
        return HedgeInstrument(
            name=name,
            kind=kind,
            volume_mw=mw,
            strike_per_mwh=k,
            premium_per_mwh=prem,  # type: ignore[arg-type]
            period_start=START,
            period_end=dt.date(2025, 7, 1),
        )

    return HedgeBook(
        region="NSW1",
        instruments=[
            inst("base", "base_swap", 3.0, strike),
            inst("peak", "peak_swap", 1.0, 110.0),
            inst("cap", "cap", 4.0, 300.0, 10.0),
        ],
    )


def test_payoffs_match_full_paths(sim: SimulationResult) -> None:
    """Monthly aggregates give the same payoffs as a direct sum over the kept full paths."""
    book = _book()
    pay = book_payoffs_aud(sim.prices, book)[:4]
    price = sim.kept_price_per_mwh.astype(float)
    f = sim.grid.features()
    peak = f.peak[:, None]
    base = 3.0 * 0.5 * (price - 90.0).sum(axis=0)
    peak_sw = 1.0 * 0.5 * np.where(peak, price - 110.0, 0.0).sum(axis=0)
    cap = 4.0 * 0.5 * (np.maximum(price - 300.0, 0.0) - 10.0).sum(axis=0)
    np.testing.assert_allclose(pay, np.column_stack([base, peak_sw, cap]), rtol=1e-5, atol=1.0)


def test_hedge_reduces_risk_and_optimal_hedges(sim: SimulationResult) -> None:
    book = _book()
    res = value_hedge_book(sim, book, HedgeSettings(customers=10_000, lp_max_paths=1500))
    assert res.hedged["std"] < res.unhedged["std"]  # type: ignore[operator]
    # minimum variance beats the given book's variance, by construction of OLS
    unit = res.payoffs / np.array([3.0, 1.0, 4.0])
    h = np.array(list(res.min_variance_volumes_mw.values()))
    assert np.var(res.cost - unit @ h) <= np.var(res.cost - res.payoffs.sum(axis=1)) + 1e-6
    assert all(
        0 <= v <= 3.0 * vol + 1e-6
        for v, vol in zip(res.cvar_optimal_volumes_mw.values(), [3.0, 1.0, 4.0], strict=True)
    )
    cap = res.instrument_values["cap"]
    plain = mc_mean(res.payoffs[:, 2])
    assert abs(cap.value - plain.value) < 3 * plain.se
    assert cap.se <= plain.se  # control variate


def test_reentry_bounds_and_monotonicity(sim: SimulationResult) -> None:
    s = ReentrySettings()
    inputs = ReentryInputs.from_simulation(sim, s)
    avg = float((sim.cost_aud.sum(0) / sim.energy_kwh.sum(0)).mean())
    low, high = value_reentry(inputs, avg + 0.11, s), value_reentry(inputs, avg + 0.15, s)
    for v in (low, high):
        assert v.rational_in_sample.value <= v.perfect_foresight.value + 3 * v.perfect_foresight.se
        assert (
            v.rational_out_of_sample.value <= v.perfect_foresight.value + 3 * v.perfect_foresight.se
        )
        assert v.rational_in_sample.value >= -1e-9
    assert high.rational_in_sample.value <= low.rational_in_sample.value  # dearer safe harbour
    fee = value_reentry(inputs, avg + 0.11, s.model_copy(update={"switch_fee_aud": 200.0}))
    lag = value_reentry(inputs, avg + 0.11, s.model_copy(update={"notice_lag_months": 4}))
    assert fee.rational_in_sample.value <= low.rational_in_sample.value + 1e-9
    assert lag.perfect_foresight.value <= low.perfect_foresight.value + 1e-9


def test_safe_harbour_rate_recovers_the_stack(sim: SimulationResult) -> None:
    settings = RiskSettings(caps_by_fy=CAPS)
    book = _book()
    payoffs = value_hedge_book(sim, book, settings.hedging).payoffs
    price = solve_safe_harbour_rate(sim, payoffs, settings, lambda rate: 5.0)
    total = sum(v.value for v in price.stack_per_kwh.values())
    assert total == pytest.approx(price.rate_per_kwh, rel=1e-6)
    assert price.stack_per_kwh["reentry_option"].value == pytest.approx(5.0 / price.expected_kwh)
    assert 0 < price.rate_se_per_kwh < 0.01  # batch standard error of the solved rate
    tou = solve_safe_harbour_rate(
        sim,
        payoffs,
        settings.model_copy(
            update={"safe_harbour": settings.safe_harbour.model_copy(update={"structure": "tou"})}
        ),
    )
    assert tou.peak_rate_per_kwh == pytest.approx(1.6 * tou.rate_per_kwh)
    assert tou.rate_per_kwh < price.rate_per_kwh < tou.peak_rate_per_kwh  # type: ignore[operator]


def test_price_safe_harbour_end_to_end(sim: SimulationResult) -> None:
    out = price_safe_harbour(sim, _book(), RiskSettings(caps_by_fy=CAPS))
    rate = out["safe_harbour"]["rate_per_kwh"]  # type: ignore[index]
    assert 0.15 < rate < 0.6
    assert set(out["reentry_levers"]) >= {"base", "notice_lag_3_months", "reprice_at_forwards"}  # type: ignore[arg-type]
