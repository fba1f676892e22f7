"""The synthetic demo retailer: determinism, physics of the generator, prices, customers."""

from __future__ import annotations

import hashlib
import importlib
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from settlement.demo.config import DemoConfig, load_demo_config
from settlement.demo.customers import PRODUCTS, draw_customers
from settlement.demo.households import (
    CarryState,
    EnergyFlows,
    Households,
    draw_households,
    simulate_period,
    solar_scale,
)
from settlement.demo.run import generate_demo, market_limits, seed_streams
from settlement.demo.synth import (
    ar1,
    build_calendar,
    clear_sky_shape,
    simulate_prices,
    simulate_weather,
    temperature_c,
)
from settlement.store import Store

SMALL = {"households": 20, "days": 62}
Summer = tuple[Households, EnergyFlows, np.ndarray, CarryState]
TOL_KWH = 1e-9


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _generate(out: Path, **overrides: object) -> None:
    cfg = load_demo_config(**{**SMALL, **overrides})
    with Store.open(":memory:") as store:
        generate_demo(out, cfg, store)


def test_ar1_matches_the_recursion() -> None:
    rng = np.random.default_rng(7)
    for coef in (0.0, 0.5, 0.9, 0.98, -0.4):
        shocks = rng.normal(size=1000)
        expected = np.empty_like(shocks)
        prev = 0.0
        for t, e in enumerate(shocks):  # the reference recursion, written out
            prev = coef * prev + e
            expected[t] = prev
        np.testing.assert_allclose(ar1(shocks, coef), expected, rtol=0, atol=1e-9)


def test_same_seed_gives_identical_files(tmp_path: Path) -> None:
    _generate(tmp_path / "a")
    _generate(tmp_path / "b")
    a, b = _hashes(tmp_path / "a"), _hashes(tmp_path / "b")
    assert a == b
    assert sum(k.startswith("inbox/meter/") for k in a) == 2  # one NEM12 file per month
    assert sum(k.startswith("inbox/prices/") for k in a) == 2


def test_household_count_does_not_change_prices_but_seed_does(tmp_path: Path) -> None:
    _generate(tmp_path / "a")
    _generate(tmp_path / "b", households=30)
    _generate(tmp_path / "c", seed=1)
    a, b, c = (_hashes(tmp_path / x) for x in "abc")
    prices = [k for k in a if k.startswith("inbox/prices/")]
    assert all(a[k] == b[k] for k in prices)
    assert all(a[k] != c[k] for k in prices)
    meters = [k for k in a if k.startswith("inbox/meter/")]
    assert all(a[k] != b[k] for k in meters)


@pytest.fixture(scope="module")
def cfg() -> DemoConfig:
    return load_demo_config(households=60, days=31, start=date(2025, 1, 1))


@pytest.fixture(scope="module")
def summer(cfg: DemoConfig) -> Summer:
    """One summer month of 60 households (lots of solar, batteries cycling)."""
    seeds = seed_streams(cfg.seed)
    weather = simulate_weather(np.random.default_rng(seeds["weather"]), cfg.start, cfg.days)
    cal = build_calendar(cfg.start, cfg.days, cfg.meter_interval_minutes, cfg.timezone)
    sun = clear_sky_shape(cal, cfg.latitude_deg, cfg.longitude_deg)
    clear = weather.clear_fraction[cal.day]
    scale = solar_scale(sun, clear, cal.hours, cfg.solar.yield_kwh_per_kw, cfg.days)
    hh = draw_households(np.random.default_rng(seeds["attributes"]), cfg)
    flows, state = simulate_period(
        np.random.default_rng(seeds["noise"]), hh, cal, temperature_c(weather, cal), sun, clear,
        scale, CarryState.initial(hh), cfg,
    )  # fmt: skip
    return hh, flows, sun, state


def test_energy_is_conserved_per_household_and_interval(summer: Summer) -> None:
    _, f, _, _ = summer
    rebuilt = f.import_kwh - f.export_kwh + f.solar_kwh + f.discharge_kwh - f.charge_kwh
    np.testing.assert_allclose(rebuilt, f.load_kwh, rtol=0, atol=TOL_KWH)
    assert (np.minimum(f.import_kwh, f.export_kwh) == 0).all()  # never both in one interval
    assert (f.load_kwh > 0).all()
    assert min(x.min() for x in (f.solar_kwh, f.charge_kwh, f.discharge_kwh)) >= 0


def test_battery_stays_between_reserve_and_capacity(summer: Summer) -> None:
    hh, f, _, state = summer
    has = hh.battery_kwh > 0
    assert has.sum() >= 3
    soc = f.soc_kwh[has]
    assert (soc >= hh.reserve_kwh[has, None] - TOL_KWH).all()
    assert (soc <= hh.battery_kwh[has, None] + TOL_KWH).all()
    assert (f.charge_kwh[~has] == 0).all() and (f.discharge_kwh[~has] == 0).all()
    assert (f.charge_kwh[has] <= hh.battery_kw[has, None] * 0.5 + TOL_KWH).all()
    # the battery cycles: it reaches the reserve and is charged from solar
    assert np.isclose(soc.min(axis=1), hh.reserve_kwh[has], atol=1e-6).any()
    assert f.charge_kwh[has].sum() > 0
    np.testing.assert_allclose(state.soc_kwh[has], soc[:, -1])


def test_solar_is_zero_at_night_and_only_on_solar_homes(summer: Summer) -> None:
    hh, f, sun, _ = summer
    assert (f.solar_kwh[:, sun == 0] == 0).all()
    assert (f.solar_kwh[hh.solar_kw == 0] == 0).all()
    assert (f.export_kwh[hh.solar_kw == 0] == 0).all()
    solar = hh.solar_kw > 0
    assert (f.solar_kwh[solar].max(axis=1) <= 0.9 * hh.solar_kw[solar] * 0.5 + TOL_KWH).all()
    assert (f.solar_kwh[solar].sum(axis=1) > 0).all()


def test_load_and_price_share_the_temperature_driver(cfg: DemoConfig, summer: Summer) -> None:
    _, f, _, _ = summer
    seeds = seed_streams(cfg.seed)
    weather = simulate_weather(np.random.default_rng(seeds["weather"]), cfg.start, cfg.days)
    cal = build_calendar(cfg.start, cfg.days, 5, cfg.timezone)
    cap, floor = np.full(cal.size, 17500.0), np.full(cal.size, -1000.0)
    sun = clear_sky_shape(cal, cfg.latitude_deg, cfg.longitude_deg)
    path = simulate_prices(np.random.default_rng(seeds["prices"]), cal, weather, cfg.prices,
                           sun, cap, floor)  # fmt: skip
    price_30 = path.price_per_mwh.reshape(-1, 6).mean(axis=1)
    load = f.load_kwh.sum(axis=0)
    assert np.corrcoef(load, price_30)[0, 1] > 0.2  # price-volume correlation
    daily_load = load.reshape(cfg.days, -1).sum(axis=1)
    assert np.corrcoef(daily_load, weather.tmax_c)[0, 1] > 0.3  # hot summer days use more


def test_household_shares_follow_the_config() -> None:
    cfg = load_demo_config(households=4000)
    hh = draw_households(np.random.default_rng(seed_streams(cfg.seed)["attributes"]), cfg)
    solar, batt = hh.solar_kw > 0, hh.battery_kwh > 0
    assert abs(solar.mean() - cfg.solar.share) < 0.03
    assert abs(batt.mean() - cfg.battery.share) < 0.03
    assert abs(hh.ev.mean() - cfg.ev.share) < 0.02
    assert not (batt & ~solar).any()  # batteries only with solar
    assert set(hh.vpp_contract[hh.vpp_contract != ""]) <= set(cfg.battery.vpp_contracts)
    assert ((hh.vpp_contract != "") <= batt).all()
    assert len(set(hh.nmi)) == hh.count and {len(n) for n in hh.nmi} == {10}


def _year_prices() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    cfg = load_demo_config()
    seeds = seed_streams(cfg.seed)
    weather = simulate_weather(np.random.default_rng(seeds["weather"]), cfg.start, cfg.days)
    cal = build_calendar(cfg.start, cfg.days, 5, cfg.timezone)
    with Store.open(":memory:") as store:
        cap, floor = market_limits(store, cfg.start, cfg.days, 5)
    sun = clear_sky_shape(cal, cfg.latitude_deg, cfg.longitude_deg)
    path = simulate_prices(
        np.random.default_rng(seeds["prices"]), cal, weather, cfg.prices, sun, cap, floor
    )
    return path.price_per_mwh, cap, floor, path.demand_mw


def test_prices_are_realistic_and_within_market_limits() -> None:
    price, cap, floor, demand = _year_prices()
    assert price.size == 365 * 288
    assert (cap == 17500).all() and (floor == -1000).all()  # FY2024-25 from the seed table
    assert (price >= floor).all() and (price <= cap).all()
    assert 80 <= price.mean() <= 120
    assert (price < 0).sum() >= 300  # several hundred negative intervals at least
    assert (price > 1000).sum() >= 10  # spikes to thousands
    assert (price == cap).any() and (price == floor).any()
    assert 4000 < demand.mean() < 12000


def test_customer_file_is_valid_and_product_mix_follows_der() -> None:
    from settlement.customers import validate_customers

    cfg = load_demo_config(households=3000)
    seeds = seed_streams(cfg.seed)
    hh = draw_households(np.random.default_rng(seeds["attributes"]), cfg)
    book = draw_customers(np.random.default_rng(seeds["customers"]), hh, cfg)
    rows = book.rows
    raw = rows.with_columns(pl.all().cast(pl.Utf8)).with_row_index("source_line", offset=2)
    raw = raw.with_columns(
        pl.col("source_line").cast(pl.Int32), pl.col("ev", "concession").str.to_lowercase()
    )
    _, bad = validate_customers(raw)
    assert bad.height == 0, bad.head()
    assert set(rows["product"].unique()) == set(PRODUCTS)
    first = rows.unique("account", keep="first", maintain_order=True)
    der = (pl.col("solar_kw") > 0) | (pl.col("battery_kwh") > 0) | pl.col("ev")
    share = first.group_by(der.alias("der")).agg((pl.col("product") == PRODUCTS[0]).mean())
    by = dict(share.iter_rows())
    assert by[True] > by[False] + 0.2
    assert rows.filter(pl.col("move_out").is_not_null()).height > 0  # churn-out and tenants
    assert rows["account"].n_unique() > rows["nmi"].n_unique()  # tenant changes
    assert rows["account"].n_unique() < rows.height  # product switches
    assert rows["dlf"].is_between(1.03, 1.06).all() and rows["mlf"].is_between(0.99, 1.01).all()
    assert rows["cycle_day"].is_between(1, 28).all()


def _ingestion_available() -> bool:
    try:
        for name in ("settlement.nem12", "settlement.prices", "settlement.customers"):
            importlib.import_module(name)
    except ImportError:
        return False
    return True


needs_ingestion = pytest.mark.skipif(
    not _ingestion_available(), reason="settlement.nem12 / settlement.prices not importable yet"
)


@needs_ingestion
def test_round_trip_through_the_real_ingestion(tmp_path: Path) -> None:
    from settlement.demo.run import ingest_demo

    cfg = load_demo_config(**SMALL)
    with Store.open(tmp_path / "s.duckdb") as store:
        gen = generate_demo(tmp_path / "out", cfg, store)
        reports = ingest_demo(store, gen)
        assert all(r.rows_quarantined == 0 for r in reports.values()), {
            k: r.to_dict() for k, r in reports.items()
        }
        con = store.con
        n_prices, lo, hi = con.execute(
            "SELECT count(*), min(price_per_mwh), max(price_per_mwh) FROM prices"
        ).fetchone()  # type: ignore[misc]
        assert n_prices == cfg.days * 288
        assert lo == pytest.approx(gen.prices.price_per_mwh.min())
        assert hi == pytest.approx(gen.prices.price_per_mwh.max())
        supplied_days = (
            np.minimum(gen.customers.supply_to, cfg.days) - gen.customers.supply_from
        ).clip(0)
        channels = 1 + (gen.households.solar_kw > 0)
        expected = int((supplied_days * channels).sum()) * 48
        (current,) = con.execute("SELECT count(*) FROM meter_reads").fetchone()  # type: ignore[misc]
        assert current == expected
        (raw,) = con.execute("SELECT count(*) FROM meter_reads_raw").fetchone()  # type: ignore[misc]
        assert raw == gen.readings_written > current  # revisions add versions
        (estimates_now,) = con.execute(
            "SELECT count(*) FROM meter_reads WHERE quality <> 'A'"
        ).fetchone()  # type: ignore[misc]
        assert estimates_now == 0  # every estimate was revised by a later file
        (estimates_raw,) = con.execute(
            "SELECT count(*) FROM meter_reads_raw WHERE quality = 'E' AND suffix = 'E1'"
        ).fetchone()  # type: ignore[misc]
        assert estimates_raw == gen.estimated_days * 48 > 0
        (accounts,) = con.execute("SELECT count(*) FROM customers").fetchone()  # type: ignore[misc]
        assert accounts == gen.customers.rows["account"].n_unique()


@needs_ingestion
def test_build_demo_twice_is_a_no_op_and_the_cli_summarises(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli.main import app
    from settlement.demo.run import build_demo

    first = build_demo(tmp_path, households=8, days=31)
    files_before = _hashes(tmp_path / "inbox")
    assert first.rows_quarantined == 0 and first.rows_loaded > 0
    assert first.households == 8 and first.readings > 0 and first.e1_kwh > 0
    result = CliRunner().invoke(
        app, ["demo", "--out", str(tmp_path), "--households", "8", "--days", "31", "--data-only"]
    )
    assert result.exit_code == 0, result.output
    assert "households" in result.output and "negative price share" in result.output
    assert _hashes(tmp_path / "inbox") == files_before
    again = build_demo(tmp_path, households=8, days=31)
    assert again.rows_loaded == 0
    assert {f.status for r in again.reports.values() for f in r.files} == {"duplicate"}
    assert again.readings == first.readings and again.e1_kwh == first.e1_kwh


@needs_ingestion
def test_a_different_demo_is_not_mixed_into_an_existing_store(tmp_path: Path) -> None:
    from settlement.demo.run import build_demo
    from tariffs.errors import ConfigError

    build_demo(tmp_path, households=5, days=31)
    with pytest.raises(ConfigError, match="households differ"):
        build_demo(tmp_path, households=6, days=31)
    other = build_demo(tmp_path, households=6, days=31, db=tmp_path / "other.duckdb")
    assert other.households == 6  # a fresh store is fine
    again = build_demo(tmp_path, households=5, days=31)  # the first store still matches
    assert again.households == 5 and again.rows_loaded == 0
