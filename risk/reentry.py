"""The re-entry option: a dynamic customer's right to switch back to the safe-harbour rate.

At each monthly decision date ``t`` (from ``max(1, lockout)``) the customer may switch; the
switch takes effect ``notice_lag`` months later and costs ``fee``. The saving of being on the
safe harbour in month ``j`` is ``s_j = cost_j + adders x E_j - F x E_j`` (wholesale cost of the
customer's load, the dynamic product's adders, the safe-harbour rate ``F``), so the realised
value of exercising at ``t`` is ``sum_{j >= t + lag} s_j - fee`` (discounted). With re-pricing
at current forwards, ``F_t`` is the conditional expectation at ``t`` of the remaining dynamic
cost per kWh plus a markup (estimated by regression on the state), which removes most of the
value. Valued by Longstaff-Schwartz (rational exercise, in and out of sample), a perfect-foresight
upper bound, and two behavioural rules: a bill-shock threshold and a logistic hazard
(DOMAIN.md section 6).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from risk.lsm import least_squares, lsm_apply, lsm_value, polynomial_basis
from risk.settings import ReentrySettings
from risk.simulate import SimulationResult
from risk.stats import Estimate, mc_mean

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class ReentryInputs:
    """Monthly per-path quantities the option needs (``(n_months, n_paths)`` arrays)."""

    cost_aud: FloatArray
    energy_kwh: FloatArray
    states: list[FloatArray]  # per month: (n_paths, n_vars) known at the month's start
    bill_per_kwh_last: FloatArray  # dynamic bill per kWh of the previous month
    discount: FloatArray  # (n_months,) to time 0, mid-month
    years: float  # horizon length [years of 365 days] (``Grid.years``)

    @classmethod
    def from_simulation(cls, sim: SimulationResult, settings: ReentrySettings) -> ReentryInputs:
        """Monthly cost, energy and state of the simulation (the cohort's average customer)."""
        n_months = sim.cost_aud.shape[0]
        avg_price = sim.prices.price_sum_all / sim.prices.n_all[:, None]
        prev = np.vstack([np.full((1, avg_price.shape[1]), np.nan), avg_price[:-1]])
        bill = (sim.cost_aud + settings.dynamic_adders_per_kwh * sim.energy_kwh) / sim.energy_kwh
        bill_prev = np.vstack([np.full((1, bill.shape[1]), np.nan), bill[:-1]])
        states = [
            np.column_stack(
                [
                    sim.slow_at_month_start[t],
                    sim.level_at_month_start[t] / 100.0,
                    sim.driver_at_month_start[t],
                    np.nan_to_num(prev[t] / 100.0, nan=0.0),
                ]
            )
            for t in range(n_months)
        ]
        months = np.arange(n_months)
        discount = np.exp(-settings.discount_rate_annual * (months + 0.5) / 12.0)
        return cls(sim.cost_aud, sim.energy_kwh, states, bill_prev, discount, sim.grid.years)

    def subset(self, paths: slice) -> ReentryInputs:
        """The same inputs for a subset of paths."""
        return ReentryInputs(
            self.cost_aud[:, paths],
            self.energy_kwh[:, paths],
            [s[paths] for s in self.states],
            self.bill_per_kwh_last[:, paths],
            self.discount,
            self.years,
        )


def _forward_rate(
    inputs: ReentryInputs, t: int, lag: int, adders: float, markup: float
) -> FloatArray:
    """Re-priced rate at ``t``: regression estimate of remaining dynamic cost per kWh + markup."""
    rest = slice(t + lag, None)
    remaining = inputs.cost_aud[rest].sum(axis=0) + adders * inputs.energy_kwh[rest].sum(axis=0)
    per_kwh = remaining / inputs.energy_kwh[rest].sum(axis=0)
    basis = polynomial_basis(inputs.states[t], 2)
    return np.asarray(basis @ least_squares(basis, per_kwh) + markup)


def exercise_values(
    inputs: ReentryInputs, rate_per_kwh: float, settings: ReentrySettings
) -> tuple[NDArray[np.int64], FloatArray]:
    """Decision dates and the realised value [$ at time 0] of exercising at each, per path."""
    lag, adders = settings.notice_lag_months, settings.dynamic_adders_per_kwh
    n_months = inputs.cost_aud.shape[0]
    dates = np.arange(max(1, settings.lockout_months), n_months - lag)
    values = np.zeros((dates.size, inputs.cost_aud.shape[1]))
    for i, t in enumerate(dates):
        rate: float | FloatArray = rate_per_kwh
        if settings.reprice_at_forwards:
            rate = _forward_rate(inputs, int(t), lag, adders, settings.forward_markup_per_kwh)
        saving = inputs.cost_aud[t + lag :] + (adders - rate) * inputs.energy_kwh[t + lag :]
        values[i] = (saving * inputs.discount[t + lag :, None]).sum(axis=0)
        values[i] -= settings.switch_fee_aud * inputs.discount[t]
    return dates, values


@dataclass(frozen=True)
class ReentryValue:
    """Option values per dynamic customer over the horizon [$], and exercise frequencies.

    ``horizon_kwh`` is the mean energy over the whole horizon [kWh] and ``years`` the horizon's
    length [years of 365 days], so per year = value / years and per kWh = value / horizon_kwh
    (the same as per year / kWh per year) whatever the horizon's length or start day.
    """

    rational_in_sample: Estimate
    rational_out_of_sample: Estimate
    perfect_foresight: Estimate
    threshold_rule: Estimate
    hazard_rule: Estimate
    exercise_share: dict[str, float]
    upfront_charge_aud: float
    horizon_kwh: float
    years: float

    def to_dict(self) -> dict[str, object]:
        """Values per customer per year and per kWh, net of the up-front charge as well."""
        out: dict[str, object] = {}
        for name in (
            "rational_in_sample",
            "rational_out_of_sample",
            "perfect_foresight",
            "threshold_rule",
            "hazard_rule",
        ):
            est: Estimate = getattr(self, name)
            per_year = est.scale(1.0 / self.years)
            out[name] = {
                "aud_per_customer_year": per_year.to_dict(),
                "aud_per_kwh": est.scale(1.0 / self.horizon_kwh).to_dict(),
                "net_of_upfront_charge_aud_per_year": per_year.value - self.upfront_charge_aud,
            }
        out["exercise_share"] = self.exercise_share
        return out


def _rule_values(
    inputs: ReentryInputs,
    dates: NDArray[np.int64],
    values: FloatArray,
    rate: float,
    settings: ReentrySettings,
) -> tuple[FloatArray, FloatArray, float, float]:
    ratio = inputs.bill_per_kwh_last[dates] / max(rate, 1e-9)  # (n_dates, n_paths)
    hit = ratio > settings.threshold_ratio
    first = np.where(hit.any(axis=0), hit.argmax(axis=0), -1)
    n = values.shape[1]
    threshold = np.where(first >= 0, values[np.maximum(first, 0), np.arange(n)], 0.0)
    p = 1.0 / (1.0 + np.exp(-(settings.hazard_intercept + settings.hazard_slope * (ratio - 1.0))))
    survive = np.cumprod(np.vstack([np.ones((1, n)), 1.0 - p[:-1]]), axis=0)
    hazard = (survive * p * values).sum(axis=0)
    return (
        threshold,
        hazard,
        float(np.mean(first >= 0)),
        float(np.mean(1 - survive[-1] * (1 - p[-1]))),
    )


def value_reentry(
    inputs: ReentryInputs, rate_per_kwh: float, settings: ReentrySettings
) -> ReentryValue:
    """Value the re-entry option at safe-harbour rate ``rate_per_kwh`` [$/kWh].

    The out-of-sample figure fits the exercise policy on the first half of the paths and applies
    it to the second half (a low-biased estimate); the in-sample LSM value is high-biased; the
    perfect-foresight value bounds every policy from above.
    """
    dates, values = exercise_values(inputs, rate_per_kwh, settings)
    n_paths = values.shape[1]
    horizon_kwh = float(inputs.energy_kwh.sum(axis=0).mean())
    years = inputs.years
    if dates.size == 0:
        zero = Estimate(0.0, 0.0)
        return ReentryValue(
            zero, zero, zero, zero, zero, {}, settings.upfront_charge_aud, horizon_kwh, years
        )
    disc = inputs.discount[dates]
    cash = values / disc[:, None]  # valued at each decision date
    states = [inputs.states[t] for t in dates]
    fit = lsm_value(states, cash, disc, exercise_known=False)
    half = n_paths // 2
    first_half = lsm_value([s[:half] for s in states], cash[:, :half], disc, exercise_known=False)
    oos, _ = lsm_apply(
        first_half, [s[half:] for s in states], cash[:, half:], disc, exercise_known=False
    )
    foresight = mc_mean(np.maximum(values.max(axis=0), 0.0))
    threshold, hazard, share_thr, share_haz = _rule_values(
        inputs, dates, values, rate_per_kwh, settings
    )
    return ReentryValue(
        rational_in_sample=fit.value,
        rational_out_of_sample=oos,
        perfect_foresight=foresight,
        threshold_rule=mc_mean(threshold),
        hazard_rule=mc_mean(hazard),
        exercise_share={
            "rational": float(np.mean(fit.exercise_date >= 0)),
            "threshold": share_thr,
            "hazard": share_haz,
        },
        upfront_charge_aud=settings.upfront_charge_aud,
        horizon_kwh=horizon_kwh,
        years=years,
    )


LEVERS: dict[str, dict[str, object]] = {
    "base": {},
    "notice_lag_3_months": {"notice_lag_months": 3},
    "lockout_6_months": {"lockout_months": 6},
    "switch_fee_150": {"switch_fee_aud": 150.0},
    "reprice_at_forwards": {"reprice_at_forwards": True},
    "upfront_charge_60": {"upfront_charge_aud": 60.0},
}


def reentry_levers(
    inputs: ReentryInputs, rate_per_kwh: float, settings: ReentrySettings
) -> dict[str, dict[str, object]]:
    """The option priced under each policy lever, side by side (same paths)."""
    return {
        name: value_reentry(inputs, rate_per_kwh, settings.model_copy(update=change)).to_dict()
        for name, change in LEVERS.items()
    }
