"""Validation of a calibrated model: simulated statistics beside their historical values."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from risk.simulate import SimulationResult
from risk.spikes import run_lengths

FloatArray = NDArray[np.float64]
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def path_statistics(sim: SimulationResult, threshold_per_mwh: float) -> dict[str, FloatArray]:
    """Per-path statistics of a simulation: mean price, spike and negative shares, load-weighted
    price premium (load-weighted mean price / time-weighted mean price - 1)."""
    n = sim.grid.n_intervals
    mean_price = sim.prices.price_sum_all.sum(axis=0) / n
    lw_price = sim.cost_aud.sum(axis=0) * 1000.0 / sim.energy_kwh.sum(axis=0)
    return {
        "mean_price_per_mwh": mean_price,
        "spike_share": sim.spike_intervals / n,
        "negative_share": sim.negative_intervals / n,
        "load_weighted_premium": lw_price / mean_price - 1.0,
    }


def historical_statistics(
    price_per_mwh: FloatArray, load_kwh: FloatArray | None, threshold_per_mwh: float
) -> dict[str, float]:
    """The same statistics on a historical series (NaN intervals ignored)."""
    ok = np.isfinite(price_per_mwh)
    p = price_per_mwh[ok]
    out = {
        "mean_price_per_mwh": float(p.mean()),
        "spike_share": float(np.mean(p > threshold_per_mwh)),
        "negative_share": float(np.mean(p < 0)),
        "mean_spike_duration_intervals": _mean_duration(price_per_mwh > threshold_per_mwh),
    }
    if load_kwh is not None:
        both = ok & np.isfinite(load_kwh)
        lw = float(np.sum(price_per_mwh[both] * load_kwh[both]) / np.sum(load_kwh[both]))
        out["load_weighted_premium"] = lw / float(price_per_mwh[both].mean()) - 1.0
    return out


def _mean_duration(mask: NDArray[np.bool_]) -> float:
    runs = run_lengths(mask)
    return float(runs.mean()) if runs.size else 0.0


def percentile_of(value: float, samples: FloatArray) -> float:
    """Share of simulated values below ``value`` (its percentile in the simulated distribution)."""
    return float(np.mean(np.asarray(samples) < value))


def validation_report(
    sim: SimulationResult,
    hist_price_per_mwh: FloatArray,
    hist_load_kwh: FloatArray | None,
    threshold_per_mwh: float,
) -> dict[str, object]:
    """Simulated versus historical: price quantiles, spike and negative shares, spike duration,
    load-weighted price premium. Each row: historical value, simulated 1/50/99% across paths
    and the historical value's percentile in the simulated distribution."""
    hist = historical_statistics(hist_price_per_mwh, hist_load_kwh, threshold_per_mwh)
    sim_stats = path_statistics(sim, threshold_per_mwh)
    rows: dict[str, object] = {}
    for name, samples in sim_stats.items():
        if name not in hist:
            continue
        q = np.quantile(samples, [0.01, 0.5, 0.99])
        rows[name] = {
            "historical": hist[name],
            "simulated_p01": float(q[0]),
            "simulated_p50": float(q[1]),
            "simulated_p99": float(q[2]),
            "historical_percentile": percentile_of(hist[name], samples),
        }
    kept = sim.kept_price_per_mwh
    if kept.size:
        durations = [_mean_duration(kept[:, j] > threshold_per_mwh) for j in range(kept.shape[1])]
        rows["mean_spike_duration_intervals"] = {
            "historical": hist["mean_spike_duration_intervals"],
            "simulated_mean": float(np.mean(durations)),
        }
        hq = np.nanquantile(hist_price_per_mwh, QUANTILES)
        sq = np.quantile(kept, QUANTILES)
        rows["price_quantiles_per_mwh"] = {
            f"q{int(q * 100):02d}": {"historical": float(h), "simulated": float(s)}
            for q, h, s in zip(QUANTILES, hq, sq, strict=True)
        }
    return rows
