"""Safe-harbour price: the flat or TOU rate that recovers the full cost stack at a target margin.

Per safe-harbour customer and path: wholesale cost ``C``, net hedge cost ``H`` (the book's cost
less its payoff, shared over the book's customers), other cost-stack items ``o x E``. Revenue is
``R x E`` (flat) or ``R (ratio x E_peak + E_offpeak)`` (TOU, ``R`` the off-peak rate). The rate
solves (scipy ``brentq``)::

    E[revenue] - E[C + H + oE] - k (CVaR_a(L) - E[L]) - reentry(R) = margin x E[revenue]

with ``L = C + H + oE - revenue`` the per-path loss (volume risk makes the premium depend on
``R``) and ``reentry(R)`` the re-entry option's cost per safe-harbour customer (the option value
to a dynamic customer times dynamic customers per safe-harbour customer, less up-front charges).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import optimize

from risk.settings import RiskSettings
from risk.simulate import SimulationResult
from risk.stats import Estimate, mc_mean, risk_premium

FloatArray = NDArray[np.float64]
ReentryCost = Callable[[float], float]
N_BATCHES = 8


@dataclass(frozen=True)
class SafeHarbourPrice:
    """The solved rate(s) [$/kWh ex GST] and the cost stack per kWh."""

    structure: str
    rate_per_kwh: float
    peak_rate_per_kwh: float | None
    stack_per_kwh: dict[str, Estimate]
    expected_kwh: float
    rate_se_per_kwh: float = 0.0

    def to_dict(self) -> dict[str, object]:
        """JSON-ready result."""
        return {
            "structure": self.structure,
            "rate_per_kwh": self.rate_per_kwh,
            "rate_se_per_kwh": self.rate_se_per_kwh,
            "offpeak_rate_per_kwh"
            if self.peak_rate_per_kwh
            else "flat_rate_per_kwh": self.rate_per_kwh,
            "peak_rate_per_kwh": self.peak_rate_per_kwh,
            "expected_kwh_per_customer": self.expected_kwh,
            "cost_stack_per_kwh": {k: v.to_dict() for k, v in self.stack_per_kwh.items()},
        }


def _revenue_units(sim: SimulationResult, settings: RiskSettings) -> FloatArray:
    """kWh-equivalents that multiply the rate ``R`` on each path."""
    energy = sim.energy_kwh.sum(axis=0)
    if settings.safe_harbour.structure == "flat":
        return np.asarray(energy)
    peak = sim.energy_peak_kwh.sum(axis=0)
    return np.asarray(settings.safe_harbour.peak_to_offpeak_ratio * peak + (energy - peak))


def solve_safe_harbour_rate(
    sim: SimulationResult,
    hedge_payoffs_aud: FloatArray | None,
    settings: RiskSettings,
    reentry_cost_aud: ReentryCost | None = None,
    bracket_per_kwh: tuple[float, float] = (0.0, 5.0),
) -> SafeHarbourPrice:
    """Solve for the safe-harbour rate on simulated paths.

    Parameters
    ----------
    sim : simulated paths of the cohort's average customer.
    hedge_payoffs_aud : ``(n_paths, n_instruments)`` payoffs of the book for all its customers
        (``settings.hedging.customers``), or None for an unhedged product.
    settings : risk settings (margin, cost stack, risk aversion, TOU structure).
    reentry_cost_aud : re-entry cost per safe-harbour customer over the horizon as a function of
        the flat-equivalent rate [$/kWh], or None.

    The rate's standard error comes from re-solving on batches of whole replicates
    (:func:`rate_batches`); it is NaN when the paths hold fewer than two replicates.
    """
    sh, hs = settings.safe_harbour, settings.hedging
    energy = sim.energy_kwh.sum(axis=0)
    wholesale = sim.cost_aud.sum(axis=0)
    hedge = np.zeros_like(wholesale)
    if hedge_payoffs_aud is not None:
        hedge = -hedge_payoffs_aud.sum(axis=1) / hs.customers
    other = sum(sh.other_costs_per_kwh.values()) * energy
    units = _revenue_units(sim, settings)
    mean_e = float(energy.mean())
    flat_equiv = float(units.mean()) / mean_e

    lo, hi = bracket_per_kwh
    rate = _solve(wholesale, hedge, other, units, reentry_cost_aud, flat_equiv, settings, lo, hi)
    reentry_aud = reentry_cost_aud(rate * flat_equiv) if reentry_cost_aud else 0.0
    revenue = rate * units
    loss = wholesale + hedge + other - revenue
    stack = {
        "wholesale_energy": mc_mean(wholesale, groups=sim.groups).scale(1 / mean_e),
        "hedge_net_cost": mc_mean(hedge, groups=sim.groups).scale(1 / mean_e),
        "risk_premium": risk_premium(loss, hs.risk_aversion_k, hs.cvar_alpha).scale(1 / mean_e),
        "reentry_option": Estimate(reentry_aud / mean_e, 0.0),
        **{k: Estimate(v, 0.0) for k, v in sh.other_costs_per_kwh.items()},
        "margin": Estimate(sh.target_margin * float(revenue.mean()) / mean_e, 0.0),
    }
    fixed = (lambda _r: reentry_aud) if reentry_cost_aud else None
    batch, n_batches = rate_batches(sim.groups)
    rates = [
        _solve(wholesale[m], hedge[m], other[m], units[m], fixed, flat_equiv, settings, lo, hi)
        for m in (batch == b for b in range(n_batches))
    ]
    rate_se = float(np.std(rates, ddof=1) / np.sqrt(n_batches)) if n_batches > 1 else float("nan")
    peak_rate = rate * sh.peak_to_offpeak_ratio if sh.structure == "tou" else None
    return SafeHarbourPrice(sh.structure, rate, peak_rate, stack, mean_e, rate_se)


def rate_batches(groups: NDArray[np.int64]) -> tuple[NDArray[np.int64], int]:
    """Batch index per path for the rate's standard error, and the number of batches.

    The rate is re-solved on independent batches of paths (re-entry cost held at its
    full-sample value); its standard error is the spread of the batch rates / sqrt(batches).
    A batch holds whole replicates (``groups``: antithetic pairs, Sobol point sets, single
    paths): the ``G`` distinct labels, in sorted order, are split evenly into
    ``min(N_BATCHES, G)`` batches (sizes differ by at most one replicate), whatever the labels'
    values. With ``G < 2`` there is one batch and the standard error is NaN.
    """
    _, rank = np.unique(groups, return_inverse=True)
    n_groups = int(rank.max()) + 1 if rank.size else 0
    n_batches = max(1, min(N_BATCHES, n_groups))
    return np.asarray(rank.reshape(-1) * n_batches // max(n_groups, 1), dtype=np.int64), n_batches


def _solve(
    wholesale: FloatArray,
    hedge: FloatArray,
    other: FloatArray,
    units: FloatArray,
    reentry_cost_aud: ReentryCost | None,
    flat_equiv: float,
    settings: RiskSettings,
    lo: float,
    hi: float,
) -> float:
    sh, hs = settings.safe_harbour, settings.hedging

    def gap(rate: float) -> float:
        revenue = rate * units
        loss = wholesale + hedge + other - revenue
        premium = risk_premium(loss, hs.risk_aversion_k, hs.cvar_alpha).value
        reentry = reentry_cost_aud(rate * flat_equiv) if reentry_cost_aud else 0.0
        return float(-loss.mean() - premium - reentry - sh.target_margin * revenue.mean())

    return float(optimize.brentq(gap, lo, hi, xtol=1e-7))
