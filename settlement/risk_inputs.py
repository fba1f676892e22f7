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
from risk.simulate import MarketModel, SimulationResult
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
    """Calibrate the joint model from arrays (price and load grids may differ).

    The load's spike uplift is fitted where the two series overlap: the price is placed on the
    load grid and load intervals without a price count as non-spike. Grids of different interval
    lengths leave the uplift at 0, recorded in the model notes.
    """
    m = settings.model
    spike_on_load = None
    same_step = load_grid.interval_minutes == price_grid.interval_minutes
    if same_step:
        with np.errstate(invalid="ignore"):
            spike_on_load = _on_grid(price_grid, price, load_grid) > m.spike_threshold_per_mwh
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
    if not same_step:
        params.notes.append(
            f"load spike uplift not fitted: {load_grid.interval_minutes}-minute load, "
            f"{price_grid.interval_minutes}-minute prices"
        )
    return MarketModel(params, load, innovation_correlation(level, driver_on_price))


# --- runs: store -> arrays -> risk ------------------------------------------------------------


def _history_tail(grid: Grid, values: np.ndarray, days: int) -> tuple[Grid, np.ndarray]:
    """The last ``days`` whole market days of a series."""
    n = min(days * grid.slots_per_day, grid.n_intervals)
    start = grid.start_utc + np.timedelta64((grid.n_intervals - n) * grid.interval_minutes, "m")
    return Grid(start, grid.interval_minutes, n, grid.market_offset_minutes), values[-n:]


def _common_load(
    store: Store, settings: RiskSettings, price_grid: Grid, price: np.ndarray
) -> tuple[Grid, np.ndarray, int]:
    """The cohort's average load; with fewer than 28 days of reads, a flat 0.3 kWh profile on the
    price grid stands in (recorded in the model notes)."""
    try:
        grid, kwh, n = load_cohort_load(store, settings.region, settings.cohort)
    except RiskInputError:
        return price_grid, np.full(price.size, 0.3), 0
    if grid.n_intervals < 28 * grid.slots_per_day:
        return price_grid, np.full(price.size, 0.3), 0
    return grid, kwh, n


def calibrate_from_store(
    store: Store, settings: RiskSettings, until: dt.date | None = None
) -> tuple[MarketModel, dict[str, Any]]:
    """Calibrate the region's price model and the cohort's load model from the store, and
    validate it: a simulation over the last year of history against that history.

    Returns the model and a report (parameters summary and validation table).
    """
    from risk.simulate import simulate_market
    from risk.validation import validation_report

    price_grid, price = load_prices(store, settings.region, until)
    load_grid, load, n_customers = _common_load(store, settings, price_grid, price)
    label = f"{settings.region} prices to {until or 'end of store'}, cohort {settings.cohort}"
    model = calibrate_from_arrays(price_grid, price, load_grid, load, settings, label)
    if n_customers == 0:
        model.price.notes.append("no cohort meter data: flat 0.3 kWh/interval load profile")
    tail_grid, tail_price = _history_tail(price_grid, price, 365)
    sim = simulate_market(
        model,
        tail_grid,
        min(settings.simulation.n_paths, 512),
        settings.simulation.seed,
        caps_by_fy=settings.caps_by_fy,
        floor_per_mwh=settings.floor_per_mwh,
        keep_paths=max(settings.simulation.keep_paths, 8),
    )
    tail_load = None  # the history's load on the validation year's price intervals
    if load_grid.interval_minutes == tail_grid.interval_minutes:
        tail_load = _on_grid(load_grid, load, tail_grid)
        if not np.isfinite(tail_load).any():
            tail_load = None
    report = {
        "region": settings.region,
        "cohort": settings.cohort,
        "cohort_customers": n_customers,
        "history_intervals": int(np.isfinite(price).sum()),
        "validation": validation_report(
            sim, tail_price, tail_load, settings.model.spike_threshold_per_mwh
        ),
    }
    return model, report


def horizon_grid(settings: RiskSettings) -> Grid:
    """The simulated horizon of the settings (whole market days, 30-minute intervals)."""
    from risk.calendar import grid_for_period

    sim = settings.simulation
    return grid_for_period(sim.horizon_start.isoformat(), sim.horizon_days)


def simulate(
    model: MarketModel, settings: RiskSettings, cap_strikes: tuple[float, ...] = (300.0,)
) -> SimulationResult:
    """Run the Monte Carlo of the settings (see :func:`risk.simulate.simulate_market`)."""
    from risk.simulate import simulate_market

    s = settings.simulation
    return simulate_market(
        model,
        horizon_grid(settings),
        s.n_paths,
        s.seed,
        caps_by_fy=settings.caps_by_fy,
        floor_per_mwh=settings.floor_per_mwh,
        cap_strikes=cap_strikes,
        antithetic=s.antithetic,
        sampler=s.sampler,
        paths_per_chunk=s.paths_per_chunk,
        keep_paths=s.keep_paths,
    )


def load_model_params(path: str | Path) -> MarketModel:
    """A calibrated model from the JSON written by ``fairshare risk calibrate``."""
    import json

    from risk.serialize import market_model_from_dict

    try:
        data = json.loads(Path(path).read_text())
        return market_model_from_dict(data.get("model", data))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a fairshare risk model file: {exc}") from exc


def simulation_summary(sim: SimulationResult, settings: RiskSettings) -> dict[str, Any]:
    """Headline figures of a simulation, each Monte Carlo mean with its standard error."""
    from risk.stats import mc_mean
    from risk.validation import path_statistics

    stats = path_statistics(sim, settings.model.spike_threshold_per_mwh)
    out: dict[str, Any] = {
        name: {
            **mc_mean(values, groups=sim.groups).to_dict(),
            "p01": float(np.quantile(values, 0.01)),
            "p99": float(np.quantile(values, 0.99)),
        }
        for name, values in stats.items()
    }
    cost = sim.cost_aud.sum(axis=0)
    energy = sim.energy_kwh.sum(axis=0)
    out["wholesale_cost_aud_per_customer"] = mc_mean(cost, groups=sim.groups).to_dict()
    out["energy_kwh_per_customer"] = mc_mean(energy, groups=sim.groups).to_dict()
    out["paths"] = sim.n_paths
    out["intervals"] = sim.grid.n_intervals
    return out


def price_demo_safe_harbour(
    store: Store,
    settings_path: str | Path | None = None,
    hedge_book_path: str | Path | None = None,
    *,
    n_paths: int | None = None,
    model_path: str | Path | None = None,
) -> dict[str, Any]:
    """Price the demo retailer's safe-harbour product from the store (used by ``fairshare demo``).

    Calibrates (or loads ``model_path``), simulates the settings' horizon, values the hedge book
    (default ``data/hedges/demo-hedge-book.toml`` when it exists), solves the safe-harbour rate
    with its re-entry cost and prices the re-entry levers. ``n_paths`` overrides the settings.
    Returns a JSON-ready dict.
    """
    from risk.pricing import price_safe_harbour

    settings = load_settings(settings_path)
    if n_paths is not None:
        settings = settings.model_copy(
            update={"simulation": settings.simulation.model_copy(update={"n_paths": n_paths})}
        )
    book = load_hedge_book(hedge_book_path) if hedge_book_path else None
    report: dict[str, Any] = {}
    strikes = tuple(book.cap_strikes()) if book and book.cap_strikes() else (300.0,)
    if settings.model.source == "parametric" and not model_path:
        model, report = calibrate_from_store(store, settings)
        sim = simulate(model, settings, strikes)
    else:
        sim = SOURCES[settings.model.source](store, settings, model_path, strikes)
    out = price_safe_harbour(sim, book, settings)
    out["simulation"] = simulation_summary(sim, settings)
    out["validation"] = report.get("validation")
    out["settings"] = settings.model_dump(mode="json")
    return out


def _simulate_parametric(
    store: Store,
    settings: RiskSettings,
    model_path: str | Path | None,
    cap_strikes: tuple[float, ...],
) -> SimulationResult:
    model = (
        load_model_params(model_path) if model_path else calibrate_from_store(store, settings)[0]
    )
    return simulate(model, settings, cap_strikes)


def _simulate_bootstrap(
    store: Store,
    settings: RiskSettings,
    model_path: str | Path | None,
    cap_strikes: tuple[float, ...],
) -> SimulationResult:
    """Block bootstrap of joint history: prices with the cohort's load where both exist (else
    the load model's shape, from a calibration, on the price days)."""
    from risk.bootstrap import simulate_bootstrap

    price_grid, price = load_prices(store, settings.region)
    load_grid, load, n_customers = _common_load(store, settings, price_grid, price)
    if n_customers == 0 or load_grid != price_grid:
        model = (
            load_model_params(model_path)
            if model_path
            else calibrate_from_store(store, settings)[0]
        )
        f = price_grid.features()
        shape = model.load.shape_kwh[f.month, f.weekend.astype(int), f.slot]
        # days without reads take the load model's shape (so every price day can be drawn)
        joint = (
            _on_grid(load_grid, load, price_grid) if n_customers else np.full(shape.size, np.nan)
        )
        load = np.where(np.isfinite(joint), joint, shape)
    try:
        return _bootstrap_call(simulate_bootstrap, price, load, price_grid, settings, cap_strikes)
    except ValueError as exc:
        raise RiskInputError(f"bootstrap of {settings.region}: {exc}") from exc


def _bootstrap_call(
    fn: Any,
    price: np.ndarray,
    load: np.ndarray,
    price_grid: Grid,
    settings: RiskSettings,
    cap_strikes: tuple[float, ...],
) -> SimulationResult:
    s = settings.simulation
    return fn(  # type: ignore[no-any-return]
        price,
        load,
        price_grid,
        horizon_grid(settings),
        s.n_paths,
        s.seed,
        caps_by_fy=settings.caps_by_fy,
        floor_per_mwh=settings.floor_per_mwh,
        cap_strikes=cap_strikes,
        threshold_per_mwh=settings.model.spike_threshold_per_mwh,
        block_days=settings.model.bootstrap_block_days,
        keep_paths=s.keep_paths,
    )


def _on_grid(src: Grid, values: np.ndarray, dst: Grid) -> np.ndarray:
    """Values of ``src`` placed on the intervals of ``dst`` (NaN where absent)."""
    offset = int((src.start_utc - dst.start_utc).astype("timedelta64[m]").astype(np.int64))
    shift = offset // dst.interval_minutes
    out = np.full(dst.n_intervals, np.nan)
    lo, hi = max(shift, 0), min(shift + src.n_intervals, dst.n_intervals)
    if hi > lo:
        out[lo:hi] = values[lo - shift : hi - shift]
    return out


# model source (a validated setting) -> simulation
SOURCES = {"parametric": _simulate_parametric, "bootstrap": _simulate_bootstrap}


def _simulate_source(
    store: Store,
    settings: RiskSettings,
    model_path: str | Path | None,
    cap_strikes: tuple[float, ...] = (300.0,),
) -> SimulationResult:
    """Simulate with the model source the settings name (dispatched through ``SOURCES``)."""
    return SOURCES[settings.model.source](store, settings, model_path, cap_strikes)


def run_simulation(
    store: Store, settings: RiskSettings, model_path: str | Path | None = None
) -> dict[str, Any]:
    """``fairshare risk simulate``: headline simulated statistics with standard errors."""
    sim = _simulate_source(store, settings, model_path)
    return {"simulation": simulation_summary(sim, settings)}


def run_hedge(
    store: Store, settings: RiskSettings, book: HedgeBook, model_path: str | Path | None = None
) -> dict[str, Any]:
    """``fairshare risk hedge``: the book's payoff and the cost distribution with and without it,
    minimum-variance and CVaR-optimal volumes, risk premium."""
    from risk.valuation import value_hedge_book

    sim = _simulate_source(store, settings, model_path, tuple(book.cap_strikes()) or (300.0,))
    return {
        "hedge_book": value_hedge_book(sim, book, settings.hedging).to_dict(),
        "book": book.name,
    }


def run_reentry(
    store: Store,
    settings: RiskSettings,
    rate_per_kwh: float,
    model_path: str | Path | None = None,
) -> dict[str, Any]:
    """``fairshare risk reentry``: the option at a given safe-harbour rate, and its levers."""
    from risk.reentry import ReentryInputs, reentry_levers, value_reentry

    sim = _simulate_source(store, settings, model_path)
    inputs = ReentryInputs.from_simulation(sim, settings.reentry)
    return {
        "rate_per_kwh": rate_per_kwh,
        "reentry": value_reentry(inputs, rate_per_kwh, settings.reentry).to_dict(),
        "reentry_levers": reentry_levers(inputs, rate_per_kwh, settings.reentry),
    }
