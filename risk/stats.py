"""Monte Carlo estimators with standard errors, and tail risk measures.

Every Monte Carlo figure fairshare reports is an :class:`Estimate` (value and standard error).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Estimate:
    """A Monte Carlo estimate: ``value`` with its standard error ``se`` (same units)."""

    value: float
    se: float

    def to_dict(self) -> dict[str, float]:
        """``{"value": ..., "se": ...}`` for JSON."""
        return {"value": float(self.value), "se": float(self.se)}

    def __add__(self, other: Estimate) -> Estimate:
        """Sum of two estimates assumed independent (standard errors in quadrature)."""
        return Estimate(self.value + other.value, float(np.hypot(self.se, other.se)))

    def scale(self, factor: float) -> Estimate:
        """The estimate multiplied by a constant."""
        return Estimate(self.value * factor, abs(factor) * self.se)


def mc_mean(samples: ArrayLike, *, groups: ArrayLike | None = None) -> Estimate:
    """Sample mean and its standard error.

    Parameters
    ----------
    samples : one value per path.
    groups : optional replicate label per path (antithetic pairs, randomised-QMC blocks): the
        paths within a group are dependent, the groups independent, so the standard error is
        computed from the group means (groups of equal size).
    """
    x = np.asarray(samples, dtype=float)
    if groups is not None:
        _, inv = np.unique(np.asarray(groups), return_inverse=True)
        x = np.bincount(inv, weights=x) / np.bincount(inv)
    n = x.size
    se = float(x.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return Estimate(float(x.mean()), se)


def control_variate_mean(
    samples: ArrayLike, control: ArrayLike, control_mean: float
) -> tuple[Estimate, float]:
    """Control-variate estimate of ``E[samples]`` given a control with known mean.

    ``y_cv = y - beta (c - E[c])`` with ``beta = cov(y, c) / var(c)`` (estimated from the same
    paths; the bias is O(1/n)). Returns the estimate and ``beta``.
    """
    y = np.asarray(samples, dtype=float)
    c = np.asarray(control, dtype=float)
    var_c = float(c.var(ddof=1))
    if var_c <= 0.0:
        return mc_mean(y), 0.0
    beta = float(np.cov(y, c, ddof=1)[0, 1] / var_c)
    return mc_mean(y - beta * (c - control_mean)), beta


def value_at_risk(losses: ArrayLike, alpha: float = 0.95) -> float:
    """Empirical VaR: the ``alpha`` quantile of ``losses`` (losses positive)."""
    return float(np.quantile(np.asarray(losses, dtype=float), alpha))


def cvar(losses: ArrayLike, alpha: float = 0.95) -> Estimate:
    """Conditional value at risk (expected shortfall) of ``losses`` at level ``alpha``.

    Rockafellar-Uryasev form ``CVaR = VaR + E[(L - VaR)^+] / (1 - alpha)``; its standard error is
    that of the sample mean of ``VaR + (L - VaR)^+ / (1 - alpha)`` (VaR treated as known, the
    usual first-order approximation).

    References
    ----------
    Rockafellar, R.T. and Uryasev, S. (2000). Optimization of conditional value-at-risk.
    Journal of Risk 2(3), 21-41.
    """
    x = np.asarray(losses, dtype=float)
    var_ = value_at_risk(x, alpha)
    terms = var_ + np.maximum(x - var_, 0.0) / (1.0 - alpha)
    return mc_mean(terms)


def normal_cvar(mu: float, sigma: float, alpha: float = 0.95) -> float:
    """Closed-form CVaR of ``N(mu, sigma^2)``: ``mu + sigma phi(z_alpha) / (1 - alpha)``."""
    z = stats.norm.ppf(alpha)
    return float(mu + sigma * stats.norm.pdf(z) / (1.0 - alpha))


def risk_premium(losses: ArrayLike, k: float, alpha: float = 0.95) -> Estimate:
    """Risk premium ``k (CVaR_alpha - mean)`` of a loss distribution, with standard error.

    The standard error is that of the sample mean of ``k (VaR + (L-VaR)^+/(1-alpha) - L)``.
    """
    x = np.asarray(losses, dtype=float)
    var_ = value_at_risk(x, alpha)
    terms = k * (var_ + np.maximum(x - var_, 0.0) / (1.0 - alpha) - x)
    return mc_mean(terms)
