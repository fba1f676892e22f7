"""Standard error of the safe-harbour rate under every sampler (batches of whole replicates)."""

from __future__ import annotations

import numpy as np
import pytest
from test_risk_model import CAPS, synthetic_model

from risk.calendar import grid_for_period
from risk.safe_harbour import N_BATCHES, solve_safe_harbour_rate
from risk.settings import RiskSettings
from risk.simulate import simulate_market


@pytest.mark.parametrize(
    ("n_paths", "kw"),
    [
        (1024, {}),
        (1024, {"antithetic": True}),
        (2048, {"antithetic": True}),  # pair labels 0-511 and 1024-1535: not 0..n-1
        (1024, {"sampler": "sobol"}),
        (2048, {"sampler": "sobol"}),
    ],
)
def test_rate_se_finite_for_every_sampler(n_paths: int, kw: dict[str, object]) -> None:
    """Before the fix, antithetic 2048 paths split into batches of [384 x 5, 128, 0, 0] and
    Sobol into [1024, 0, 0, 0, 1024, 0, 0, 0]; the empty batches raised IndexError."""
    sim = simulate_market(
        synthetic_model(), grid_for_period("2024-07-01", 62), n_paths, 17, caps_by_fy=CAPS, **kw
    )
    groups = np.unique(sim.groups)
    assert groups.size >= 2 * N_BATCHES  # enough replicates for a grouped standard error
    price = solve_safe_harbour_rate(sim, None, RiskSettings(caps_by_fy=CAPS))
    assert np.isfinite(price.rate_se_per_kwh)
    assert 0.0 < price.rate_se_per_kwh < 0.01


def test_sobol_replicates_are_small_blocks() -> None:
    """Each Sobol replicate is its own scrambled point set, so 1024 paths give many replicates
    (was one 1024-path block: every grouped standard error NaN)."""
    sim = simulate_market(
        synthetic_model(),
        grid_for_period("2024-07-01", 31),
        1024,
        3,
        caps_by_fy=CAPS,
        sampler="sobol",
    )
    _, sizes = np.unique(sim.groups, return_counts=True)
    assert sizes.size >= 16
    assert np.all(sizes == sizes[0])


def test_rate_se_with_too_few_replicates_is_nan() -> None:
    """With fewer than two replicates there is no spread to measure: the documented rule."""
    sim = simulate_market(
        synthetic_model(),
        grid_for_period("2024-07-01", 31),
        2,
        5,
        caps_by_fy=CAPS,
        antithetic=True,
    )
    price = solve_safe_harbour_rate(sim, None, RiskSettings(caps_by_fy=CAPS))
    assert np.isnan(price.rate_se_per_kwh)
    assert np.isfinite(price.rate_per_kwh)


def test_sobol_replicates_are_scrambled_nets() -> None:
    """Every 64-path replicate is a randomised (0, m, 1)-net in each coordinate: one point in
    each of the 64 equal intervals of [0, 1); replicates are scrambled independently, and each
    coordinate is uniform (mean of the normals within 3 standard errors of 0)."""
    from scipy import stats

    from risk.simulate import SOBOL_REPLICATE_PATHS, _sobol_normals

    z = _sobol_normals(4 * SOBOL_REPLICATE_PATHS, 30, np.random.default_rng(5))
    u = stats.norm.cdf(z).reshape(4, SOBOL_REPLICATE_PATHS, 30)
    cells = np.sort(np.floor(u * SOBOL_REPLICATE_PATHS), axis=1)
    np.testing.assert_array_equal(cells, np.broadcast_to(np.arange(64.0)[None, :, None], u.shape))
    assert not np.allclose(u[0], u[1], atol=1e-3)
    many = _sobol_normals(64 * 64, 3, np.random.default_rng(6)).reshape(64, 64, 3).mean(axis=1)
    assert np.all(np.abs(many.mean(axis=0)) < 3 * many.std(axis=0, ddof=1) / 8)
