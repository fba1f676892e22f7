"""One call from simulated paths to every valuation: hedge book, re-entry option, safe harbour."""

from __future__ import annotations

from collections.abc import Callable

from risk.hedging import HedgeBook
from risk.reentry import ReentryInputs, reentry_levers, value_reentry
from risk.safe_harbour import solve_safe_harbour_rate
from risk.settings import RiskSettings
from risk.simulate import SimulationResult
from risk.valuation import value_hedge_book


def reentry_cost_function(
    sim: SimulationResult, settings: RiskSettings
) -> Callable[[float], float]:
    """Re-entry cost per safe-harbour customer [$ over the horizon] as a function of the rate.

    Uses the rational (in-sample LSM) value, the defensible upper end of the exercise models,
    net of the up-front option charge, times dynamic customers per safe-harbour customer.
    """
    inputs = ReentryInputs.from_simulation(sim, settings.reentry)
    r = settings.reentry
    years = sim.grid.years  # the charge is per year: horizon days / 365 of it

    def cost(rate_per_kwh: float) -> float:
        value = value_reentry(inputs, rate_per_kwh, r).rational_in_sample.value
        net = max(value - r.upfront_charge_aud * years, 0.0)
        return net * r.dynamic_customers_per_safe_harbour

    return cost


def price_safe_harbour(
    sim: SimulationResult, book: HedgeBook | None, settings: RiskSettings
) -> dict[str, object]:
    """Hedge valuation, safe-harbour rate (with re-entry cost) and the re-entry levers at it."""
    valuation = value_hedge_book(sim, book, settings.hedging) if book else None
    payoffs = valuation.payoffs if valuation else None
    price = solve_safe_harbour_rate(sim, payoffs, settings, reentry_cost_function(sim, settings))
    inputs = ReentryInputs.from_simulation(sim, settings.reentry)
    flat_rate = price.rate_per_kwh
    if price.peak_rate_per_kwh is not None:
        energy = sim.energy_kwh.sum(axis=0).mean()
        peak = sim.energy_peak_kwh.sum(axis=0).mean()
        flat_rate = (price.peak_rate_per_kwh * peak + price.rate_per_kwh * (energy - peak)) / energy
    return {
        "safe_harbour": price.to_dict(),
        "hedge_book": valuation.to_dict() if valuation else None,
        "reentry": value_reentry(inputs, flat_rate, settings.reentry).to_dict(),
        "reentry_levers": reentry_levers(inputs, flat_rate, settings.reentry),
        "paths": sim.n_paths,
    }
