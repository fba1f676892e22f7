"""Longstaff-Schwartz least-squares Monte Carlo for Bermudan exercise.

The engine is generic: per exercise date it takes the regression state (what the holder knows)
and the cash flow of exercising then. When that cash flow is itself uncertain at the decision
date (the re-entry option: the savings of switching are realised later), it is regressed on the
state too and the decision compares the two regression estimates.

References
----------
Longstaff, F.A. and Schwartz, E.S. (2001). Valuing American options by simulation: a simple
least-squares approach. Review of Financial Studies 14(1), 113-147.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from risk.stats import Estimate, mc_mean

FloatArray = NDArray[np.float64]


def polynomial_basis(state: FloatArray, degree: int = 2) -> FloatArray:
    """Regression basis: 1, each state variable's powers up to ``degree``, pairwise products.

    ``state`` is ``(n_paths, n_vars)`` (or ``(n_paths,)``); returns ``(n_paths, n_terms)``.
    """
    s = state.reshape(state.shape[0], -1)
    cols = [np.ones(s.shape[0])]
    for j in range(s.shape[1]):
        cols.extend(s[:, j] ** p for p in range(1, degree + 1))
    for i in range(s.shape[1]):
        cols.extend(s[:, i] * s[:, j] for j in range(i + 1, s.shape[1]))
    return np.column_stack(cols)


@dataclass(frozen=True)
class LSMResult:
    """Value of a Bermudan exercise right and the fitted exercise policy.

    ``coef_continuation[t]`` and ``coef_exercise[t]`` are the regression coefficients used at
    exercise date ``t`` (``None`` where no regression was run); ``exercise_date`` is the date
    index at which each path exercised (``-1``: never).
    """

    value: Estimate
    exercise_date: NDArray[np.int64]
    coef_continuation: list[FloatArray | None]
    coef_exercise: list[FloatArray | None]
    scale: list[tuple[FloatArray, FloatArray]]


def _standardise(state: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    s = state.reshape(state.shape[0], -1)
    mu, sd = s.mean(axis=0), s.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    return (s - mu) / sd, mu, sd


def least_squares(basis: FloatArray, y: FloatArray, ridge: float = 1e-10) -> FloatArray:
    """OLS coefficients by the normal equations (the basis is standardised, so well scaled),
    with a tiny ridge for rank-deficient cases; much faster than an SVD for tall designs."""
    gram = basis.T @ basis
    gram[np.diag_indices_from(gram)] += ridge * max(float(np.trace(gram)), 1.0) / gram.shape[0]
    return np.asarray(np.linalg.solve(gram, basis.T @ y))


def _fit(basis: FloatArray, y: FloatArray) -> FloatArray:
    return least_squares(basis, y)


def lsm_value(
    states: list[FloatArray],
    exercise_cash: FloatArray,
    discount: FloatArray,
    *,
    exercise_known: bool = True,
    itm_only: bool = True,
    degree: int = 2,
) -> LSMResult:
    """Value a Bermudan right by least-squares Monte Carlo.

    Parameters
    ----------
    states : per exercise date ``t``, the regression state ``(n_paths, n_vars)``.
    exercise_cash : ``(n_dates, n_paths)``; cash flow of exercising at date ``t``, valued at
        ``t`` [money]. Non-positive values are never exercised.
    discount : ``(n_dates,)`` discount factors from each date back to time 0.
    exercise_known : True when ``exercise_cash[t]`` is known at ``t`` (an American put); False
        when it is realised later, in which case it is regressed on the state as well.
    itm_only : regress on paths with positive (estimated) exercise value only (as LS 2001).
    degree : polynomial degree of the basis.

    Returns
    -------
    LSMResult with the time-0 value (in-sample, mean of discounted cash flows) and the policy.
    """
    n_dates, n_paths = exercise_cash.shape
    cash = np.zeros(n_paths)  # discounted to time 0
    when = np.full(n_paths, -1, dtype=np.int64)
    coef_c: list[FloatArray | None] = [None] * n_dates
    coef_e: list[FloatArray | None] = [None] * n_dates
    scales: list[tuple[FloatArray, FloatArray]] = []
    for t in range(n_dates - 1, -1, -1):
        z, mu, sd = _standardise(states[t])
        scales.append((mu, sd))
        basis = polynomial_basis(z, degree)
        ex_now = exercise_cash[t]
        ex_hat = ex_now
        if not exercise_known:
            fit_e = _fit(basis, ex_now)
            coef_e[t] = fit_e
            ex_hat = basis @ fit_e
        if t == n_dates - 1:
            take = ex_hat > 0
        else:
            sel = ex_hat > 0 if itm_only else np.ones(n_paths, dtype=bool)
            take = np.zeros(n_paths, dtype=bool)
            if sel.sum() > basis.shape[1]:
                fit_c = _fit(basis[sel], cash[sel] / discount[t])
                coef_c[t] = fit_c
                cont = basis @ fit_c
                take = sel & (ex_hat > cont)
        cash = np.where(take, ex_now * discount[t], cash)
        when = np.where(take, t, when)
    scales.reverse()
    return LSMResult(mc_mean(cash), when, coef_c, coef_e, scales)


def lsm_apply(
    policy: LSMResult,
    states: list[FloatArray],
    exercise_cash: FloatArray,
    discount: FloatArray,
    *,
    exercise_known: bool = True,
    degree: int = 2,
) -> tuple[Estimate, NDArray[np.int64]]:
    """Apply a fitted LSM policy to fresh paths (out-of-sample, a low-biased estimate).

    Returns the value estimate and each path's exercise date index (``-1``: never).
    """
    n_dates, n_paths = exercise_cash.shape
    alive = np.ones(n_paths, dtype=bool)
    cash = np.zeros(n_paths)
    when = np.full(n_paths, -1, dtype=np.int64)
    for t in range(n_dates):
        mu, sd = policy.scale[t]
        basis = polynomial_basis((states[t].reshape(n_paths, -1) - mu) / sd, degree)
        coef_e = policy.coef_exercise[t]
        ex_hat = exercise_cash[t] if exercise_known or coef_e is None else basis @ coef_e
        coef_c = policy.coef_continuation[t]
        if t == n_dates - 1:
            take = ex_hat > 0
        elif coef_c is None:
            take = np.zeros(n_paths, dtype=bool)
        else:
            take = (ex_hat > 0) & (ex_hat > basis @ coef_c)
        take &= alive
        cash[take] = exercise_cash[t, take] * discount[t]
        when[take] = t
        alive &= ~take
    return mc_mean(cash), when
