"""Inputs for the risk engine: the only place that reads the store (or files) for ``risk/``.

Loads 30-minute prices from the ``prices`` view and cohort-average loads from ``meter_reads`` and
``customers`` as numpy arrays on a regular grid, reads the TOML settings and hedge book, and hands
them to the pure functions in :mod:`risk` (cli -> settlement -> risk).
"""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from pydantic import ValidationError

from risk.calendar import Grid
from risk.hedging import HedgeBook
from risk.load_model import calibrate_load_model, innovation_correlation
from risk.price_model import calibrate_price_model
from risk.settings import RiskSettings
from risk.simulate import MarketModel
from settlement.store import Store
from tariffs.errors import ConfigError, FairshareError

MARKET_OFFSET_MINUTES = 600  # NEM market time, UTC+10

# cohort name -> fixed SQL predicate on the customers view (never user text)
COHORTS: dict[str, str] = {
    "all": "TRUE",
    "solar": "c.solar_kw > 0",
    "battery": "c.battery_kwh > 0",
    "ev": "c.ev",
    "vpp": "c.vpp_contract IS NOT NULL",
    "concession": "c.concession",
    "plain": "c.solar_kw = 0 AND c.battery_kwh = 0 AND NOT c.ev",
}


class RiskInputError(FairshareError):
    """The store holds too little data for a risk run (names what is missing)."""


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; errors name the file."""
    try:
        with Path(path).open("rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read TOML: {exc}") from exc


def load_settings(path: str | Path | None) -> RiskSettings:
    """Risk settings from a TOML file (defaults when ``path`` is None)."""
    if path is None:
        return RiskSettings()
    try:
        return RiskSettings.model_validate(read_toml(path))
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid risk settings: {exc}") from exc


def load_hedge_book(path: str | Path) -> HedgeBook:
    """A hedge book from a TOML file (``[[instruments]]`` tables)."""
    try:
        return HedgeBook.model_validate(read_toml(path))
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid hedge book: {exc}") from exc


def to_grid(
    starts_utc: pl.Series, values: pl.Series, interval_minutes: int = 30
) -> tuple[Grid, np.ndarray]:
    """Place values keyed by interval start (UTC) on a gap-free grid of whole market days.

    Missing intervals become NaN (never zero).
    """
    if starts_utc.len() == 0:
        raise RiskInputError("no intervals to place on a grid")
    offset = np.timedelta64(MARKET_OFFSET_MINUTES, "m")
    t = starts_utc.dt.replace_time_zone(None).to_numpy().astype("datetime64[m]")
    first_day = (t.min() + offset).astype("datetime64[D]")
    last_day = (t.max() + offset).astype("datetime64[D]") + 1
    start = first_day.astype("datetime64[m]") - offset
    n = int((last_day - first_day).astype(int)) * 1440 // interval_minutes
    idx = ((t - start).astype(np.int64) // interval_minutes).astype(np.int64)
    out = np.full(n, np.nan)
    out[idx] = values.to_numpy().astype(float)
    return Grid(start, interval_minutes, n, MARKET_OFFSET_MINUTES), out


def load_prices(store: Store, region: str, until: dt.date | None = None) -> tuple[Grid, np.ndarray]:
    """30-minute mean prices [$/MWh] of ``region`` from the ``prices`` view (before ``until``)."""
    frame = store.query(
        "SELECT time_bucket(INTERVAL 30 MINUTE, interval_start) AS start, "
        "avg(price_per_mwh) AS price FROM prices WHERE region = ? "
        "AND (?::DATE IS NULL OR interval_start < ?::DATE - INTERVAL 10 HOUR) "
        "GROUP BY 1 ORDER BY 1",
        [region, until, until],
    ).pl()
    if frame.height == 0:
        raise RiskInputError(f"the store has no prices for region {region!r}; ingest prices first")
    return to_grid(frame["start"], frame["price"])


def load_cohort_load(store: Store, region: str, cohort: str) -> tuple[Grid, np.ndarray, int]:
    """Average kWh per 30 minutes per customer of a cohort (E1 + E2 - B1) from the store.

    Returns the grid, the average-customer series and the number of customers (NMIs) used.
    """
    if cohort not in COHORTS:
        raise ConfigError(f"cohort {cohort!r} is not one of {sorted(COHORTS)}")
    sql = f"""
        WITH members AS (
            SELECT DISTINCT c.nmi FROM customers c WHERE c.region = ? AND {COHORTS[cohort]}
        ), per_nmi AS (
            SELECT m.nmi, time_bucket(INTERVAL 30 MINUTE, r.interval_start) AS start,
                   sum(CASE WHEN r.suffix LIKE 'B%' THEN -r.kwh ELSE r.kwh END) AS kwh
            FROM meter_reads r JOIN members m USING (nmi)
            WHERE r.suffix LIKE 'E%' OR r.suffix LIKE 'B%'
            GROUP BY 1, 2
        )
        SELECT start, avg(kwh) AS kwh, count(DISTINCT nmi) AS n FROM per_nmi GROUP BY 1 ORDER BY 1
    """  # the predicate comes from the fixed COHORTS mapping, never from user text
    frame = store.query(sql, [region]).pl()
    if frame.height == 0:
        raise RiskInputError(
            f"no meter reads for cohort {cohort!r} in {region}; ingest customers and meter data"
        )
    grid, kwh = to_grid(frame["start"], frame["kwh"])
    return grid, kwh, int(np.max(frame["n"].to_numpy()))


def read_aemo_price_and_demand(
    folder: str | Path, region: str
) -> tuple[Grid, np.ndarray, np.ndarray]:
    """AEMO ``PRICE_AND_DEMAND_YYYYMM_<REGION>.csv.gz`` files as 30-minute means on a grid.

    A direct file reader for benchmarks and back-tests (no store): SETTLEMENTDATE is
    interval-ending market time (UTC+10); 5-minute rows are averaged into their half-hour.
    Returns the grid, prices [$/MWh] and regional demand [MW].
    """
    files = sorted(Path(folder).glob(f"PRICE_AND_DEMAND_*_{region}.csv.gz"))
    if not files:
        raise RiskInputError(f"no PRICE_AND_DEMAND files for {region} in {folder}")
    raw = pl.concat(
        [
            pl.read_csv(f, schema_overrides={"RRP": pl.Float64, "TOTALDEMAND": pl.Float64})
            for f in files
        ],
        how="vertical_relaxed",
    )
    end = pl.col("SETTLEMENTDATE").str.strptime(pl.Datetime("us"), "%Y/%m/%d %H:%M:%S")
    start_utc = (end - pl.duration(minutes=1)).dt.truncate("30m") - pl.duration(hours=10)
    frame = (
        raw.with_columns(start_utc.dt.replace_time_zone("UTC").alias("start"))
        .group_by("start")
        .agg(pl.col("RRP").mean().alias("price"), pl.col("TOTALDEMAND").mean().alias("demand"))
        .sort("start")
    )
    grid, price = to_grid(frame["start"], frame["price"])
    _, demand = to_grid(frame["start"], frame["demand"])
    return grid, price, demand


def _align_daily(src: Grid, values: np.ndarray, dst: Grid) -> np.ndarray:
    """Daily values of ``src`` placed on the market days of ``dst`` (NaN where absent)."""
    src_day0 = int(src.features(0, 1).day[0])
    dst_days = dst.features().day[:: dst.slots_per_day]
    idx = dst_days - src_day0
    ok = (idx >= 0) & (idx < values.size)
    out = np.full(dst_days.size, np.nan)
    out[ok] = values[idx[ok]]
    return out


def calibrate_from_arrays(
    price_grid: Grid,
    price: np.ndarray,
    load_grid: Grid,
    load_kwh: np.ndarray,
    settings: RiskSettings,
    label: str = "",
) -> MarketModel:
    """Calibrate the joint model from arrays (price and load grids may differ)."""
    m = settings.model
    spike_on_load = None
    if load_grid == price_grid:
        spike_on_load = price > m.spike_threshold_per_mwh
    load, driver = calibrate_load_model(load_kwh, load_grid, spike_on_load, label=label)
    driver_on_price = _align_daily(load_grid, driver, price_grid)
    params, level = calibrate_price_model(
        price,
        price_grid,
        spike_model=m.spike_model,
        spike_threshold_per_mwh=m.spike_threshold_per_mwh,
        driver_daily=driver_on_price,
        spike_sigmas=m.spike_sigmas,
        label=label,
    )
    return MarketModel(params, load, innovation_correlation(level, driver_on_price))
