"""``fairshare risk ...`` on a real DuckDB store holding synthetic prices and meter reads."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from test_risk_model import CAPS, synthetic_model
from typer.testing import CliRunner

from cli.main import app
from risk.calendar import grid_for_period
from risk.simulate import simulate_market
from settlement.meter_store import append_reads
from settlement.risk_inputs import (
    calibrate_from_store,
    load_settings,
    price_demo_safe_harbour,
    to_grid,
)
from settlement.store import Store

REPO = Path(__file__).resolve().parents[1]
BOOK = REPO / "data" / "hedges" / "demo-hedge-book.toml"
runner = CliRunner()

SETTINGS = """
region = "NSW1"
[simulation]
n_paths = 256
seed = 5
keep_paths = 4
horizon_start = 2024-07-01
horizon_days = 62
[hedging]
lp_max_paths = 256
"""


def _fill_store(path: Path) -> None:
    grid = grid_for_period("2023-05-01", 426)
    sim = simulate_market(synthetic_model(), grid, 2, 3, caps_by_fy=CAPS, keep_paths=1)
    starts = grid.starts_utc().astype("datetime64[us]")
    now = dt.datetime(2024, 7, 1, tzinfo=dt.UTC)
    price_frame = pl.DataFrame(
        {
            "region": "NSW1",
            "interval_start": pl.Series(starts).dt.replace_time_zone("UTC"),
            "interval_minutes": 30,
            "price_per_mwh": sim.kept_price_per_mwh[:, 0].astype(float),
            "version_at": now,
            "file_id": 1,
            "source_line": np.arange(grid.n_intervals) + 2,
            "is_current": True,
        }
    ).with_columns(pl.col("interval_minutes").cast(pl.Int16))
    tail = slice(grid.n_intervals - 120 * 48, grid.n_intervals)
    rng = np.random.default_rng(0)
    read_frame = pl.concat(
        [
            pl.DataFrame(
                {
                    "nmi": nmi,
                    "suffix": "E1",
                    "interval_start": pl.Series(starts[tail]).dt.replace_time_zone("UTC"),
                    "interval_minutes": 30,
                    "kwh": sim.kept_load_kwh[tail, 0].astype(float) * rng.uniform(0.8, 1.2),
                    "quality": "A",
                    "version_at": now,
                    "file_id": 2,
                    "source_line": np.arange(120 * 48) + 2,
                    "is_current": True,
                }
            )
            for nmi in ("NMI0000001", "NMI0000002", "NMI0000003")
        ]
    ).with_columns(pl.col("interval_minutes").cast(pl.Int16))
    with Store.open(path) as store, store.transaction() as con:
        con.register("price_frame", price_frame)
        con.register("read_frame", read_frame)
        for fid, kind in ((1, "prices"), (2, "meter"), (3, "customers")):
            con.execute(
                "INSERT INTO ingested_files (file_id, kind, path, sha256, size_bytes, ingested_at, "
                "status) VALUES (?, ?, ?, ?, 0, ?, 'loaded')",
                [fid, kind, f"synthetic-{kind}", f"sha{fid}", now],
            )
        con.execute(
            "INSERT INTO price_reads_raw (region, interval_start, interval_minutes, price_per_mwh, "
            "version_at, file_id, source_line, is_current) SELECT * FROM price_frame"
        )
        append_reads(
            con,
            "SELECT nmi, suffix, interval_start, interval_minutes, kwh, quality, NULL, NULL, "
            "version_at, file_id, source_line, is_current FROM read_frame",
        )
        for i, nmi in enumerate(("NMI0000001", "NMI0000002", "NMI0000003")):
            con.execute(
                "INSERT INTO customers_raw (account, nmi, region, timezone, dlf, mlf, billing_cycle,"
                " cycle_day, move_in, solar_kw, battery_kwh, battery_kw, backup_reserve_pct, ev, "
                "concession, file_id, source_line) VALUES (?, ?, 'NSW1', 'Australia/Sydney', 1.0, "
                "1.0, 'monthly', 1, DATE '2020-01-01', 0, 0, 0, 0, false, false, 3, ?)",
                [f"A{i}", nmi, i + 2],
            )


@pytest.fixture(scope="module")
def risk_env(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("risk")
    db = folder / "store.duckdb"
    _fill_store(db)
    settings = folder / "settings.toml"
    settings.write_text(SETTINGS)
    return db, settings


def test_to_grid_marks_gaps_nan() -> None:
    starts = pl.Series(
        [dt.datetime(2024, 1, 1, 14, 0), dt.datetime(2024, 1, 1, 15, 0)]
    ).dt.replace_time_zone("UTC")
    grid, values = to_grid(starts, pl.Series([10.0, 30.0]))
    assert grid.n_intervals == 48  # one whole market day (2024-01-02 in UTC+10)
    assert values[0] == 10.0 and np.isnan(values[1]) and values[2] == 30.0


def test_calibrate_from_store_uses_cohort_load(risk_env: tuple[Path, Path]) -> None:
    db, settings = risk_env
    with Store.open(db, read_only=True) as store:
        model, report = calibrate_from_store(store, load_settings(settings))
    assert report["cohort_customers"] == 3
    assert model.load.shape_kwh.mean() == pytest.approx(0.4, rel=0.5)
    assert "mean_price_per_mwh" in report["validation"]


def test_cli_calibrate_then_commands(risk_env: tuple[Path, Path], tmp_path: Path) -> None:
    db, settings = risk_env
    model = tmp_path / "model.json"
    res = runner.invoke(
        app,
        ["risk", "calibrate", "--db", str(db), "--settings", str(settings), "--out", str(model)],
    )
    assert res.exit_code == 0, res.output
    assert "validation" in res.output and model.exists()
    base = ["--db", str(db), "--settings", str(settings), "--model", str(model), "--json"]
    sim = runner.invoke(app, ["risk", "simulate", *base])
    assert sim.exit_code == 0, sim.output
    figures = json.loads(sim.stdout)["simulation"]
    assert figures["paths"] == 256 and figures["mean_price_per_mwh"]["se"] > 0
    hedge = runner.invoke(app, ["risk", "hedge", *base, "--book", str(BOOK)])
    assert hedge.exit_code == 0, hedge.output
    assert "cvar_optimal_volumes_mw" in json.loads(hedge.stdout)["hedge_book"]
    reentry = runner.invoke(app, ["risk", "reentry", *base, "--rate", "0.25"])
    assert reentry.exit_code == 0, reentry.output
    assert "lockout_6_months" in json.loads(reentry.stdout)["reentry_levers"]
    price = runner.invoke(app, ["risk", "price-safe-harbour", *base[:-1], "--book", str(BOOK)])
    assert price.exit_code == 0, price.output
    assert "rate:" in price.stdout


def test_same_seed_same_answer_via_cli(risk_env: tuple[Path, Path], tmp_path: Path) -> None:
    db, settings = risk_env
    args = [
        "risk",
        "simulate",
        "--db",
        str(db),
        "--settings",
        str(settings),
        "--json",
        "--paths",
        "64",
    ]
    first, second = runner.invoke(app, args), runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    # the paths are bit-identical (test_risk_model); the summary's float reductions may round
    # differently in the last bit with memory alignment (numpy SIMD), hence the 1e-12 tolerance
    a, b = json.loads(first.stdout)["simulation"], json.loads(second.stdout)["simulation"]
    for key, row in a.items():
        if isinstance(row, dict):
            for k, v in row.items():
                assert v == pytest.approx(b[key][k], rel=1e-12, abs=1e-15), (key, k)
        else:
            assert row == b[key]


def test_bad_settings_is_a_usage_error(risk_env: tuple[Path, Path], tmp_path: Path) -> None:
    db, _ = risk_env
    bad = tmp_path / "bad.toml"
    bad.write_text('[model]\nspike_model = "garch"\n')
    res = runner.invoke(app, ["risk", "simulate", "--db", str(db), "--settings", str(bad)])
    assert res.exit_code == 2
    assert "spike_model" in res.output


def test_price_demo_safe_harbour(risk_env: tuple[Path, Path]) -> None:
    db, settings = risk_env
    with Store.open(db, read_only=True) as store:
        out = price_demo_safe_harbour(store, settings, BOOK, n_paths=128)
    sh = out["safe_harbour"]
    assert 0.1 < sh["rate_per_kwh"] < 1.0
    assert out["simulation"]["paths"] == 128


def test_bootstrap_source_via_cli(risk_env: tuple[Path, Path], tmp_path: Path) -> None:
    db, settings = risk_env
    boot = tmp_path / "boot.toml"
    boot.write_text(settings.read_text() + '\n[model]\nsource = "bootstrap"\n')
    res = runner.invoke(
        app, ["risk", "simulate", "--db", str(db), "--settings", str(boot), "--json"]
    )
    assert res.exit_code == 0, res.output
    figures = json.loads(res.stdout)["simulation"]
    assert figures["paths"] == 256 and figures["energy_kwh_per_customer"]["value"] > 0


def test_calibrate_from_store_fits_uplift_on_partial_meter_data(
    risk_env: tuple[Path, Path],
) -> None:
    """Meter reads cover the last 120 of 426 price days: the spike uplift and the validation's
    load-weighted premium use the overlap (both were skipped when the grids differed)."""
    db, settings = risk_env
    with Store.open(db, read_only=True) as store:
        model, report = calibrate_from_store(store, load_settings(settings))
    assert model.load.spike_uplift != 0.0
    row = report["validation"]["load_weighted_premium"]
    assert np.isfinite(row["historical"])
