"""Benchmark: 10,000 paths x 17,520 half-hours for one region, price and load, hedge book valued.

Target (issue): at most 2x the time numpy takes just to draw the same number of normal variates
(one per path and half-hour, measured in the same run, same chunk shape); peak memory < 1 GiB.
The model is calibrated on NSW1 from ../shared/data when present, else a synthetic model.

Run: uv run python bench/bench_risk.py [--paths 10000] [--repeat 2]

The simulation draws its per-interval normals in float32 (see risk.simulate.DAY_DTYPE); the
target is stated against numpy's default float64 draws, and the float32 draw time is printed too.
By default the engine draws the next day's normals in one worker thread while it computes the
current day (``draw_ahead``); the serial engine (one thread) is timed as well, so both figures are
on record.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from risk.calendar import grid_for_period  # noqa: E402
from risk.settings import HedgeSettings, RiskSettings  # noqa: E402
from risk.simulate import BLOCK_PATHS, MarketModel, simulate_market  # noqa: E402
from risk.valuation import value_hedge_book  # noqa: E402
from settlement.risk_inputs import (  # noqa: E402
    calibrate_from_arrays,
    load_hedge_book,
    read_aemo_price_and_demand,
)

SHARED = REPO.parent / "shared" / "data" / "prices" / "aemo-price-and-demand"


def calibrated_model(settings: RiskSettings) -> tuple[MarketModel, str]:
    """NSW1 model calibrated on the real AEMO files up to 2024-07-01 (demand as load proxy)."""
    grid, price, demand = read_aemo_price_and_demand(SHARED, "NSW1")
    n = int(np.flatnonzero(grid.starts_utc() < np.datetime64("2024-06-30T14:00"))[-1]) + 1
    n -= n % grid.slots_per_day
    from risk.calendar import Grid

    g = Grid(grid.start_utc, grid.interval_minutes, n, grid.market_offset_minutes)
    load = demand[:n] / np.nanmean(demand[:n]) * 0.3125  # ~15 kWh/day average customer
    return calibrate_from_arrays(g, price[:n], g, load, settings, "NSW1 to 2024-06-30"), "NSW1"


def baseline_normals(n_paths: int, n_days: int, slots: int, dtype: type = np.float64) -> float:
    """Seconds numpy needs to draw n_paths x n_days x slots standard normals (same chunks)."""
    rng = np.random.default_rng(1)
    buf: np.ndarray = np.empty((slots, BLOCK_PATHS), dtype=dtype)
    n_blocks = -(-n_paths // BLOCK_PATHS)
    t0 = time.perf_counter()
    for _ in range(n_days):
        for _ in range(n_blocks):
            rng.standard_normal(out=buf, dtype=dtype)
    return time.perf_counter() - t0


def main() -> None:
    """Run the benchmark and print the figures."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--paths", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    settings = RiskSettings()
    model, label = calibrated_model(settings)
    book = load_hedge_book(REPO / "data" / "hedges" / "demo-hedge-book.toml")
    grid = grid_for_period("2024-07-01", 365)
    strikes = tuple(book.cap_strikes())
    caps = settings.caps_by_fy
    baseline, baseline32, t_sim, t_total, t_serial = [], [], [], [], []
    for _ in range(args.repeat):  # interleaved, best of N (the machine may be shared)
        baseline.append(baseline_normals(args.paths, 365, grid.slots_per_day))
        baseline32.append(baseline_normals(args.paths, 365, grid.slots_per_day, np.float32))
        t0 = time.perf_counter()
        sim = simulate_market(model, grid, args.paths, 7, caps_by_fy=caps, cap_strikes=strikes)
        t_sim.append(time.perf_counter() - t0)
        valuation = value_hedge_book(sim, book, HedgeSettings(lp_max_paths=2000))
        t_total.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        serial = simulate_market(
            model, grid, args.paths, 7, caps_by_fy=caps, cap_strikes=strikes, draw_ahead=False
        )
        value_hedge_book(serial, book, HedgeSettings(lp_max_paths=2000))
        t_serial.append(time.perf_counter() - t0)
    # memory: a separate, traced run (tracemalloc slows numpy allocation, so it is not timed)
    tracemalloc.start()
    sim2 = simulate_market(model, grid, args.paths, 7, caps_by_fy=caps, cap_strikes=strikes)
    value_hedge_book(sim2, book, HedgeSettings(lp_max_paths=2000))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    identical = bool(
        np.array_equal(sim.cost_aud, sim2.cost_aud)
        and np.array_equal(sim.cost_aud, serial.cost_aud)
    )
    base = min(baseline)
    figures = {
        "model": label,
        "paths": args.paths,
        "intervals": grid.n_intervals,
        "normals_drawn_baseline": args.paths * grid.n_intervals,
        "baseline_numpy_normals_float64_s": round(base, 3),
        "baseline_numpy_normals_float32_s": round(min(baseline32), 3),
        "simulate_s": round(min(t_sim), 3),
        "simulate_and_value_s": round(min(t_total), 3),
        "ratio_simulate_to_baseline": round(min(t_sim) / base, 2),
        "ratio_total_to_baseline": round(min(t_total) / base, 2),
        "ratio_total_to_float32_baseline": round(min(t_total) / min(baseline32), 2),
        "serial_simulate_and_value_s": round(min(t_serial), 3),
        "ratio_serial_total_to_baseline": round(min(t_serial) / base, 2),
        "peak_traced_numpy_mib": round(peak / 2**20, 1),
        "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "hedged_cost_cvar95_aud": valuation.hedged["cvar95"],
        "rerun_identical": identical,
    }
    print(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
