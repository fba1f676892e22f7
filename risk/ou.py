"""Ornstein-Uhlenbeck processes: exact discretisation, moments and AR(1) calibration.

``dX = kappa (theta - X) dt + sigma dW`` sampled every ``dt`` is the AR(1)
``X[t+1] = c + a X[t] + e`` with ``a = exp(-kappa dt)``, ``c = theta (1 - a)`` and
``sd(e) = sigma sqrt((1 - a^2) / (2 kappa))`` (DOMAIN.md section 6).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import signal

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class OUParams:
    """OU parameters: ``kappa`` [1/unit time], ``theta`` [units of X], ``sigma`` [X/sqrt(time)]."""

    kappa: float
    theta: float
    sigma: float

    def ar1(self, dt: float) -> tuple[float, float, float]:
        """The exact AR(1) form ``(c, a, sd_e)`` for a step ``dt``."""
        a = float(np.exp(-self.kappa * dt))
        sd_e = self.sigma * np.sqrt((1.0 - a * a) / (2.0 * self.kappa))
        return self.theta * (1.0 - a), a, float(sd_e)

    def to_dict(self) -> dict[str, float]:
        """Plain floats for JSON."""
        return {"kappa": self.kappa, "theta": self.theta, "sigma": self.sigma}


def fit_ar1(x: ArrayLike, valid_pairs: ArrayLike | None = None) -> tuple[float, float, float]:
    """OLS fit of ``x[t+1] = c + a x[t] + e``; returns ``(c, a, sd_e)``.

    Parameters
    ----------
    x : the sampled series (equally spaced).
    valid_pairs : optional boolean mask of length ``len(x) - 1``; pair ``(x[t], x[t+1])`` is
        used only where it is True (gaps, spike intervals).
    """
    arr = np.asarray(x, dtype=float)
    x0, x1 = arr[:-1], arr[1:]
    ok = np.isfinite(x0) & np.isfinite(x1)
    if valid_pairs is not None:
        ok &= np.asarray(valid_pairs, dtype=bool)
    x0, x1 = x0[ok], x1[ok]
    if x0.size < 3:
        raise ValueError(f"AR(1) fit needs at least 3 valid pairs, got {x0.size}")
    design = np.column_stack([np.ones_like(x0), x0])
    (c, a), *_ = np.linalg.lstsq(design, x1, rcond=None)
    resid = x1 - (c + a * x0)
    sd_e = float(np.sqrt(resid @ resid / max(x0.size - 2, 1)))
    return float(c), float(a), sd_e


def ou_from_ar1(c: float, a: float, sd_e: float, dt: float, a_max: float = 0.9999) -> OUParams:
    """OU parameters from AR(1) coefficients (DOMAIN.md section 6).

    ``kappa = -ln(a)/dt``, ``theta = c/(1-a)``,
    ``sigma = sd_e sqrt(-2 ln(a) / (dt (1 - a^2)))``. ``a`` is clipped into ``[1e-6, a_max]``
    so a near-unit-root fit stays stationary.
    """
    a_c = float(np.clip(a, 1e-6, a_max))
    kappa = -np.log(a_c) / dt
    theta = c / (1.0 - a_c)
    sigma = sd_e * np.sqrt(-2.0 * np.log(a_c) / (dt * (1.0 - a_c * a_c)))
    return OUParams(float(kappa), float(theta), float(sigma))


def calibrate_ou(x: ArrayLike, dt: float, valid_pairs: ArrayLike | None = None) -> OUParams:
    """Fit an OU process to a series sampled every ``dt`` by AR(1) regression."""
    return ou_from_ar1(*fit_ar1(x, valid_pairs), dt=dt)


def ou_mean(x0: float | FloatArray, params: OUParams, t: float | FloatArray) -> FloatArray:
    """``E[X_t | X_0 = x0] = theta + (x0 - theta) exp(-kappa t)``."""
    return np.asarray(params.theta + (x0 - params.theta) * np.exp(-params.kappa * np.asarray(t)))


def ou_variance(params: OUParams, t: float | FloatArray) -> FloatArray:
    """``Var[X_t | X_0] = sigma^2 (1 - exp(-2 kappa t)) / (2 kappa)``."""
    t_arr = np.asarray(t, dtype=float)
    return np.asarray(params.sigma**2 * -np.expm1(-2.0 * params.kappa * t_arr) / (2 * params.kappa))


def ar1_filter(innovations: FloatArray, a: float, x0: FloatArray, c: float = 0.0) -> FloatArray:
    """Run ``x[t+1] = c + a x[t] + e[t+1]`` along axis 0 of ``innovations`` from state ``x0``.

    Time runs down axis 0 (one row per step, one column per path), so a chunk of rows can be
    filtered and the last row passed on as ``x0`` of the next chunk: streaming gives the same
    result as one pass. Returns the states after each step (same shape as ``innovations``).
    """
    zi = (a * np.asarray(x0, dtype=innovations.dtype))[np.newaxis, :]
    drive = innovations + c if c else innovations
    out, _ = signal.lfilter([1.0], [1.0, -a], drive, axis=0, zi=zi)
    return np.asarray(out)


def simulate_ou(
    params: OUParams, x0: float, dt: float, n_steps: int, n_paths: int, rng: np.random.Generator
) -> FloatArray:
    """Exact OU paths on a grid: array ``(n_steps + 1, n_paths)`` starting at ``x0``."""
    c, a, sd_e = params.ar1(dt)
    eps = rng.standard_normal((n_steps, n_paths)) * sd_e
    start = np.full(n_paths, float(x0))
    body = ar1_filter(eps, a, start, c)
    return np.vstack([start, body])
