"""Hedge books (base and peak swaps, caps), their payoffs, and optimal hedge ratios.

Payoffs are computed from per-path monthly aggregates of the simulated price (sums over all and
peak intervals, and sums of the excess over each cap strike), so valuing a book never needs the
full path matrix.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import optimize, sparse

from risk.stats import Estimate, cvar, mc_mean

FloatArray = NDArray[np.float64]

InstrumentKind = Literal["base_swap", "peak_swap", "cap"]


class HedgeInstrument(BaseModel):
    """One hedge contract, bought by the retailer.

    ``strike_per_mwh`` is the swap's fixed price or the cap's strike (300 $/MWh for a standard
    cap); ``premium_per_mwh`` is the price paid for a cap per MWh of cover (0 for swaps). The
    period is whole months, ``period_end`` exclusive.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: InstrumentKind
    volume_mw: float = Field(ge=0)
    strike_per_mwh: float
    premium_per_mwh: float = Field(default=0.0, ge=0)
    period_start: dt.date
    period_end: dt.date

    @model_validator(mode="after")
    def _whole_months(self) -> HedgeInstrument:
        if self.period_start.day != 1 or self.period_end.day != 1:
            raise ValueError(
                f"{self.name}: period {self.period_start}..{self.period_end} must start and end "
                "on the first of a month"
            )
        if self.period_end <= self.period_start:
            raise ValueError(f"{self.name}: period_end {self.period_end} must follow period_start")
        return self


class HedgeBook(BaseModel):
    """A named list of hedge instruments (validated once, when the file is read)."""

    model_config = ConfigDict(extra="forbid")

    name: str = "hedge book"
    region: str
    instruments: list[HedgeInstrument]

    def cap_strikes(self) -> list[float]:
        """The distinct cap strikes the simulation must track."""
        return sorted({i.strike_per_mwh for i in self.instruments if i.kind == "cap"})


@dataclass(frozen=True)
class MonthlyPriceAggregates:
    """Per path and month sums of the simulated price [$/MWh x intervals].

    Arrays are ``(n_months, n_paths)``; ``months`` holds the first day of each month and
    ``hours_per_interval`` converts interval sums to MWh-weighted sums.
    """

    months: list[dt.date]
    hours_per_interval: float
    n_all: NDArray[np.int64]
    n_peak: NDArray[np.int64]
    price_sum_all: FloatArray
    price_sum_peak: FloatArray
    cap_strikes: list[float]
    cap_excess_sum: FloatArray  # (n_strikes, n_months, n_paths)


def _month_mask(agg: MonthlyPriceAggregates, inst: HedgeInstrument) -> NDArray[np.bool_]:
    return np.array([inst.period_start <= m < inst.period_end for m in agg.months])


def instrument_payoff_aud(agg: MonthlyPriceAggregates, inst: HedgeInstrument) -> FloatArray:
    """Payoff [$] to the buyer on each path, over the instrument's period.

    Swap: ``sum (P - K) x MW x h``; peak swap over peak intervals only; cap:
    ``sum max(P - K, 0) x MW x h - premium x MW x h x intervals``. Months of the period outside
    the simulated horizon contribute nothing.
    """
    mask = _month_mask(agg, inst)
    scale = inst.volume_mw * agg.hours_per_interval
    if inst.kind == "base_swap":
        n, s = agg.n_all[mask], agg.price_sum_all[mask]
        return np.asarray(scale * (s.sum(axis=0) - inst.strike_per_mwh * n.sum()))
    if inst.kind == "peak_swap":
        n, s = agg.n_peak[mask], agg.price_sum_peak[mask]
        return np.asarray(scale * (s.sum(axis=0) - inst.strike_per_mwh * n.sum()))
    k = agg.cap_strikes.index(inst.strike_per_mwh)
    excess = agg.cap_excess_sum[k][mask].sum(axis=0)
    return np.asarray(scale * (excess - inst.premium_per_mwh * agg.n_all[mask].sum()))


def book_payoffs_aud(agg: MonthlyPriceAggregates, book: HedgeBook) -> FloatArray:
    """Payoff matrix ``(n_paths, n_instruments)`` [$] of every instrument in ``book``."""
    return np.column_stack([instrument_payoff_aud(agg, i) for i in book.instruments])


def min_variance_hedge(cost: FloatArray, payoffs: FloatArray) -> tuple[FloatArray, float]:
    """Minimum-variance hedge ratios by OLS of ``cost`` on instrument ``payoffs``.

    Holding ``h`` units of each instrument leaves ``cost - payoffs @ h``; OLS of cost on the
    payoffs (with intercept) minimises its sample variance. Returns ``(h, r_squared)``.
    """
    design = np.column_stack([np.ones(len(cost)), payoffs])
    coef, *_ = np.linalg.lstsq(design, cost, rcond=None)
    resid = cost - design @ coef
    r2 = 1.0 - float(resid.var() / cost.var()) if cost.var() > 0 else 0.0
    return np.asarray(coef[1:]), r2


def cvar_optimal_hedge(
    cost: FloatArray,
    payoffs: FloatArray,
    alpha: float = 0.95,
    bounds: tuple[float, float] = (0.0, 5.0),
) -> tuple[FloatArray, float]:
    """Hedge ratios minimising ``CVaR_alpha(cost - payoffs @ h)`` (Rockafellar-Uryasev LP).

    Variables ``(h, zeta, u)``; minimise ``zeta + sum(u) / ((1 - alpha) n)`` subject to
    ``u_j >= cost_j - payoffs_j h - zeta`` and ``u_j >= 0``, ``h`` within ``bounds`` (units of
    each instrument's volume). Solved by scipy's HiGHS. Returns ``(h, cvar)``.
    """
    n, m = payoffs.shape
    c = np.concatenate([np.zeros(m), [1.0], np.full(n, 1.0 / ((1.0 - alpha) * n))])
    a_ub = sparse.hstack(
        [sparse.csr_matrix(-payoffs), sparse.csr_matrix(-np.ones((n, 1))), -sparse.eye(n)]
    ).tocsr()
    b_ub = -np.asarray(cost, dtype=float)
    var_bounds = [bounds] * m + [(None, None)] + [(0.0, None)] * n
    res = optimize.linprog(c, A_ub=a_ub, b_ub=b_ub, bounds=var_bounds, method="highs")
    if not res.success:
        raise ArithmeticError(f"CVaR hedge LP failed: {res.message}")
    return np.asarray(res.x[:m]), float(res.fun)


@dataclass(frozen=True)
class HedgedCost:
    """Cost distribution summary [$] with and without a hedge position."""

    mean: Estimate
    cvar95: Estimate
    std: float

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict."""
        return {"mean": self.mean.to_dict(), "cvar95": self.cvar95.to_dict(), "std": self.std}


def summarise_cost(cost: FloatArray, alpha: float = 0.95) -> HedgedCost:
    """Mean, CVaR and standard deviation of a per-path cost [$]."""
    return HedgedCost(mc_mean(cost), cvar(cost, alpha), float(np.std(cost, ddof=1)))
