"""Closed-form option values and GBM paths used as oracles for the Monte Carlo engines."""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy import stats

FloatArray = NDArray[np.float64]


def black76(
    forward: float,
    strike: float,
    rate_annual: float,
    volatility_annual: float,
    maturity_years: float,
    kind: Literal["call", "put"] = "call",
) -> float:
    """Black (1976) value of a European option on a forward.

    Parameters
    ----------
    forward, strike : forward price and strike [price units].
    rate_annual : continuously compounded discount rate [1/year].
    volatility_annual : lognormal volatility of the forward [1/sqrt(year)].
    maturity_years : time to expiry [year].
    kind : ``"call"`` or ``"put"``.

    References
    ----------
    Black, F. (1976). The pricing of commodity contracts. J. Financial Economics 3, 167-179.
    Hull, Options, Futures and Other Derivatives, Example 18.6 (F=20, K=20, r=0.09, sigma=0.25,
    T=4/12: put 1.1166).
    """
    if volatility_annual < 0 or maturity_years < 0:
        raise ValueError(
            f"volatility ({volatility_annual}) and maturity ({maturity_years}) must be >= 0"
        )
    disc = np.exp(-rate_annual * maturity_years)
    stdev = volatility_annual * np.sqrt(maturity_years)
    if stdev == 0.0:
        intrinsic = forward - strike if kind == "call" else strike - forward
        return float(disc * max(intrinsic, 0.0))
    d1 = (np.log(forward / strike) + 0.5 * stdev**2) / stdev
    d2 = d1 - stdev
    if kind == "call":
        return float(disc * (forward * stats.norm.cdf(d1) - strike * stats.norm.cdf(d2)))
    return float(disc * (strike * stats.norm.cdf(-d2) - forward * stats.norm.cdf(-d1)))


def black_scholes_put(
    spot: float, strike: float, rate_annual: float, volatility_annual: float, maturity_years: float
) -> float:
    """European put on a non-dividend stock (Black-76 on the forward ``S exp(rT)``)."""
    forward = spot * np.exp(rate_annual * maturity_years)
    return black76(forward, strike, rate_annual, volatility_annual, maturity_years, "put")


def gbm_paths(
    spot: float,
    rate_annual: float,
    volatility_annual: float,
    maturity_years: float,
    n_steps: int,
    n_paths: int,
    rng: np.random.Generator,
    *,
    antithetic: bool = True,
) -> FloatArray:
    """Risk-neutral GBM paths at ``n_steps`` equally spaced dates after 0: ``(n_steps, n_paths)``.

    With ``antithetic`` the second half of the paths uses the negated normals of the first half
    (``n_paths`` must then be even).
    """
    dt = maturity_years / n_steps
    if antithetic:
        if n_paths % 2:
            raise ValueError(f"antithetic sampling needs an even path count, got {n_paths}")
        z_half = rng.standard_normal((n_steps, n_paths // 2))
        z = np.hstack([z_half, -z_half])
    else:
        z = rng.standard_normal((n_steps, n_paths))
    drift = (rate_annual - 0.5 * volatility_annual**2) * dt
    log_paths = np.log(spot) + np.cumsum(drift + volatility_annual * np.sqrt(dt) * z, axis=0)
    return np.exp(log_paths)
