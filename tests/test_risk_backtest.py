"""Back-test on real AEMO prices: calibrate up to a cut-off, simulate the next year, and check
where the realised year falls in the simulated distribution (issue acceptance 2)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from risk.calendar import Grid, grid_for_period
from risk.load_model import calibrate_load_model, innovation_correlation
from risk.price_model import calibrate_price_model
from risk.simulate import MarketModel, simulate_market
from risk.validation import percentile_of, validation_report

CAPS = {2020: 14700.0, 2021: 15000.0, 2022: 15100.0, 2023: 15500.0, 2024: 16600.0, 2025: 17500.0}
pytestmark = pytest.mark.shared


def read_price_and_demand(folder: Path, region: str) -> pl.DataFrame:
    """AEMO PRICE_AND_DEMAND files of a region as 30-minute means on a gap-filled grid.

    SETTLEMENTDATE is interval-ending market time (UTC+10); 5-minute rows are averaged into the
    half-hour that contains them.
    """
    files = sorted(folder.glob(f"PRICE_AND_DEMAND_*_{region}.csv.gz"))
    raw = pl.concat(
        [
            pl.read_csv(f, schema_overrides={"RRP": pl.Float64, "TOTALDEMAND": pl.Float64})
            for f in files
        ],
        how="vertical_relaxed",
    )
    end = pl.col("SETTLEMENTDATE").str.strptime(pl.Datetime("us"), "%Y/%m/%d %H:%M:%S")
    half_hours = (
        raw.with_columns((end - pl.duration(minutes=1)).dt.truncate("30m").alias("start_local"))
        .group_by("start_local")
        .agg(
            pl.col("RRP").mean().alias("price_per_mwh"),
            pl.col("TOTALDEMAND").mean().alias("demand_mw"),
        )
    )
    lo, hi = half_hours["start_local"].min(), half_hours["start_local"].max()
    grid = pl.DataFrame({"start_local": pl.datetime_range(lo, hi, "30m", eager=True)})
    return grid.join(half_hours, on="start_local", how="left")


def _grid(frame: pl.DataFrame) -> Grid:
    first = np.datetime64(frame["start_local"][0], "m") - np.timedelta64(600, "m")
    return Grid(first, 30, frame.height)


@pytest.mark.parametrize("region", ["NSW1", "SA1"])
def test_backtest_next_financial_year(shared_data: Path, region: str) -> None:
    folder = shared_data / "prices" / "aemo-price-and-demand"
    frame = read_price_and_demand(folder, region)
    cut = dt.datetime(2023, 7, 1)
    hist = frame.filter(pl.col("start_local") < cut)
    real = frame.filter(
        (pl.col("start_local") >= cut) & (pl.col("start_local") < dt.datetime(2024, 7, 1))
    )
    grid = _grid(hist)
    price = hist["price_per_mwh"].to_numpy().astype(float)
    # regional demand stands in for a cohort's load (its daily driver is the demand driver)
    demand = hist["demand_mw"].to_numpy().astype(float)
    load, driver = calibrate_load_model(demand, grid, price > 300)
    params, level = calibrate_price_model(price, grid, driver_daily=driver, label=region)
    model = MarketModel(params, load, innovation_correlation(level, driver))
    sim = simulate_market(
        model, grid_for_period("2023-07-01", 366), 1024, 2024, caps_by_fy=CAPS, keep_paths=8
    )
    realised = real["price_per_mwh"].to_numpy().astype(float)
    report = validation_report(sim, realised, real["demand_mw"].to_numpy().astype(float), 300.0)
    mean_row, spike_row = report["mean_price_per_mwh"], report["spike_share"]
    assert isinstance(mean_row, dict) and isinstance(spike_row, dict)
    assert 0.01 <= mean_row["historical_percentile"] <= 0.99, mean_row
    assert 0.01 <= spike_row["historical_percentile"] <= 0.99, spike_row
    n = sim.grid.n_intervals
    assert (
        percentile_of(float(np.nanmean(realised)), sim.prices.price_sum_all.sum(axis=0) / n)
        == mean_row["historical_percentile"]
    )
