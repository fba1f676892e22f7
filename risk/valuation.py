"""Hedge-book valuation on simulated paths: cost with and without hedges, optimal hedges, premium.

Costs are for the hedged book of ``customers`` average customers of the cohort [$ over the
horizon]; a positive payoff of a hedge reduces cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from risk.hedging import (
    HedgeBook,
    book_payoffs_aud,
    cvar_optimal_hedge,
    min_variance_hedge,
    summarise_cost,
)
from risk.settings import HedgeSettings
from risk.simulate import SimulationResult
from risk.stats import Estimate, control_variate_mean, mc_mean, risk_premium

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class HedgeValuation:
    """Results of :func:`value_hedge_book` (money in $ over the horizon for the whole book)."""

    unhedged: dict[str, object]
    hedged: dict[str, object]
    hedge_cost: Estimate
    instrument_values: dict[str, Estimate]
    min_variance_volumes_mw: dict[str, float]
    min_variance_r2: float
    cvar_optimal_volumes_mw: dict[str, float]
    cvar_optimal_cvar: float
    risk_premium_unhedged: Estimate
    risk_premium_hedged: Estimate
    cost: FloatArray
    payoffs: FloatArray

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary (without the per-path arrays)."""
        return {
            "unhedged_cost_aud": self.unhedged,
            "hedged_cost_aud": self.hedged,
            "hedge_cost_aud": self.hedge_cost.to_dict(),
            "instrument_payoff_aud": {k: v.to_dict() for k, v in self.instrument_values.items()},
            "min_variance_volumes_mw": self.min_variance_volumes_mw,
            "min_variance_r2": self.min_variance_r2,
            "cvar_optimal_volumes_mw": self.cvar_optimal_volumes_mw,
            "cvar_optimal_cvar_aud": self.cvar_optimal_cvar,
            "risk_premium_unhedged_aud": self.risk_premium_unhedged.to_dict(),
            "risk_premium_hedged_aud": self.risk_premium_hedged.to_dict(),
        }


def instrument_estimates(
    sim: SimulationResult, book: HedgeBook, payoffs: FloatArray
) -> dict[str, Estimate]:
    """Expected payoff of each instrument; caps use the spike-count control variate."""
    control = sim.spike_events - sim.spike_events_expected
    out = {}
    for j, inst in enumerate(book.instruments):
        if inst.kind == "cap":
            out[inst.name], _ = control_variate_mean(payoffs[:, j], control, 0.0)
        else:
            out[inst.name] = mc_mean(payoffs[:, j], groups=sim.groups)
    return out


def value_hedge_book(
    sim: SimulationResult, book: HedgeBook, settings: HedgeSettings
) -> HedgeValuation:
    """Value ``book`` on every path and find the minimum-variance and CVaR-optimal volumes.

    The optimal hedges are expressed as volumes [MW] of the book's own instruments
    (``multiple x volume``), the CVaR LP bounded to ``[0, max_hedge_multiple]`` multiples and run
    on at most ``lp_max_paths`` paths.
    """
    alpha, k = settings.cvar_alpha, settings.risk_aversion_k
    cost = sim.cost_aud.sum(axis=0) * settings.customers
    payoffs = book_payoffs_aud(sim.prices, book)
    hedged = cost - payoffs.sum(axis=1)
    names = [i.name for i in book.instruments]
    volumes = np.array([i.volume_mw for i in book.instruments])
    unit = payoffs / np.where(volumes > 0, volumes, 1.0)
    h_mv, r2 = min_variance_hedge(cost, unit)
    n_lp = min(settings.lp_max_paths, cost.size)
    h_cv, cvar_value = cvar_optimal_hedge(
        cost[:n_lp], payoffs[:n_lp], alpha, (0.0, settings.max_hedge_multiple)
    )
    return HedgeValuation(
        unhedged=summarise_cost(cost, alpha).to_dict(),
        hedged=summarise_cost(hedged, alpha).to_dict(),
        hedge_cost=mc_mean(-payoffs.sum(axis=1), groups=sim.groups),
        instrument_values=instrument_estimates(sim, book, payoffs),
        min_variance_volumes_mw=dict(zip(names, map(float, h_mv), strict=True)),
        min_variance_r2=r2,
        cvar_optimal_volumes_mw=dict(zip(names, map(float, h_cv * volumes), strict=True)),
        cvar_optimal_cvar=cvar_value,
        risk_premium_unhedged=risk_premium(cost, k, alpha),
        risk_premium_hedged=risk_premium(hedged, k, alpha),
        cost=cost,
        payoffs=payoffs,
    )
