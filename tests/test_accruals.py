"""Nightly accruals of product charges (settlement.accruals): pieces, amounts, bills, audit."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from cli.main import app
from settlement.audits import run_audits
from settlement.billing import load_products
from settlement.config import load_config
from settlement.customers import COLUMNS, ingest_customer_file
from settlement.nightly import run_nightly
from settlement.store import Store
from settlement.wholesale import market_day_bounds, settle_day
from tariffs.errors import ExitCode
from tests.nightly_fixtures import DAYS, START, build_inbox
from tests.test_wholesale import add_prices, add_reads, five_minute_prices

PRODUCTS = Path(__file__).resolve().parents[1] / "data" / "products"
DAY = dt.date(2024, 10, 15)  # Sydney is on daylight time (UTC+11): local days start at 01:00 NEM


def _customers(store: Store, tmp_path: Path, *rows: str) -> None:
    (tmp_path / "c.csv").write_text(",".join(COLUMNS) + "\n" + "\n".join(rows) + "\n")
    ingest_customer_file(store, tmp_path / "c.csv")


def _market_day_reads(store: Store, day: dt.date, nmi: str = "NMI1") -> None:
    """48 half-hours over market day ``day``: 1.0 kWh import and 0.5 kWh export each."""
    start, _ = market_day_bounds(day)
    ts = [start + dt.timedelta(minutes=30 * k) for k in range(48)]
    add_reads(
        store,
        pl.DataFrame(
            {
                "nmi": [nmi] * 96,
                "suffix": ["E1"] * 48 + ["B1"] * 48,
                "interval_start": ts + ts,
                "interval_minutes": [30] * 96,
                "kwh": [1.0] * 48 + [0.5] * 48,
            },
            schema_overrides={"interval_start": pl.Datetime("us", "UTC")},
        ),
    )


SYDNEY = "A1,NMI1,NSW1,Australia/Sydney,1.05,0.98,monthly,1,2024-01-01,,5,0,0,0,false,false,,sh-flat,2024-01-01,"


def test_a_market_day_accrues_to_the_two_local_days_it_meets(store: Store, tmp_path: Path) -> None:
    """Hand-worked: in October Sydney's day starts at 01:00 market time, so market day D holds
    local D from 01:00 (46 half-hours) and local D+1 to 01:00 (2). sh-flat charges 0.3050/kWh
    for import and credits 0.0500/kWh for export: local D 46 x 0.3050 = 14.03 and
    -23 x 0.05 = -1.15; local D+1 2 x 0.3050 = 0.61 and -1 x 0.05 = -0.05. Neither local day is
    complete until the market day on its other side is settled."""
    _customers(store, tmp_path, SYDNEY)
    _market_day_reads(store, DAY)
    counts = settle_day(store, DAY, "r1", load_products(PRODUCTS))
    assert counts["accrued_pieces"] == 2 and counts["accrual_skipped"] == 0
    days = store.query(
        "SELECT local_date, utc_from, utc_to, day_minutes, import_kwh, export_kwh, "
        "import_minutes, controlled_kwh FROM accrual_days ORDER BY local_date"
    ).fetchall()
    utc = dt.UTC
    assert days == [
        (DAY, dt.datetime(2024, 10, 14, 14, tzinfo=utc), dt.datetime(2024, 10, 15, 13, tzinfo=utc),
         1440, 46.0, 23.0, 1380, 0.0),
        (DAY + dt.timedelta(1), dt.datetime(2024, 10, 15, 13, tzinfo=utc),
         dt.datetime(2024, 10, 15, 14, tzinfo=utc), 1440, 2.0, 1.0, 60, 0.0),
    ]  # fmt: skip
    lines = store.query(
        "SELECT local_date, component, quantity_kwh, round(amount, 9), taxable FROM accrual_lines "
        "ORDER BY local_date, line_order"
    ).fetchall()
    assert lines == [
        (DAY, "Energy", 46.0, 14.03, True),
        (DAY, "Solar feed-in credit", 23.0, -1.15, False),
        (DAY + dt.timedelta(1), "Energy", 2.0, 0.61, True),
        (DAY + dt.timedelta(1), "Solar feed-in credit", 1.0, -0.05, False),
    ]
    assert store.query("SELECT bool_or(complete) FROM daily_charges").fetchall() == [(False,)]
    # the next market day completes local D+1: 2 + 46 half-hours, 48 x 0.3050 = 14.64
    _market_day_reads(store, DAY + dt.timedelta(1))
    settle_day(store, DAY + dt.timedelta(1), "r1", load_products(PRODUCTS))
    row = store.query(
        "SELECT quantity_kwh, round(amount, 9), n_intervals, complete FROM daily_charges "
        "WHERE local_date = ? AND component = 'Energy'",
        [DAY + dt.timedelta(1)],
    ).fetchall()
    assert row == [(48.0, 14.64, 48, True)]


def test_resettling_replaces_the_accruals_bit_for_bit(store: Store, tmp_path: Path) -> None:
    """400 spot-linked accounts with random 5-minute reads and prices: the stored sums are
    floats as the pass took them (not rounded), and re-settling the day four times writes the
    same bits (the frames are sorted before they are added, so no join's row order can change
    the order of a sum; this data does not show the difference without the sort)."""
    n = 400
    _customers(
        store,
        tmp_path,
        *[
            SYDNEY.replace("A1,NMI1", f"S{i},NMIS{i}").replace("sh-flat", "dyn-passthrough")
            for i in range(n)
        ],
    )
    start, _ = market_day_bounds(DAY)
    ts = [start + dt.timedelta(minutes=5 * k) for k in range(288)]
    rng = np.random.default_rng(3)
    add_reads(
        store,
        pl.DataFrame(
            {
                "nmi": [f"NMIS{i}" for i in range(n) for _ in range(288)] * 2,
                "suffix": ["E1"] * (288 * n) + ["B1"] * (288 * n),
                "interval_start": ts * n * 2,
                "interval_minutes": [5] * (288 * n * 2),
                "kwh": rng.uniform(0, 0.3, 288 * n * 2).round(3).tolist(),
            },
            schema_overrides={"interval_start": pl.Datetime("us", "UTC")},
        ),
    )
    add_prices(store, five_minute_prices(start, rng.normal(80, 300, 288).round(2).tolist()))
    products = load_products(PRODUCTS)
    tables = ("accrual_days", "accrual_lines")
    settle_day(store, DAY, "r1", products)
    first = [store.query(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in tables]
    assert len(first[1]) == 2 * 2 * n  # import and export lines, two local days
    for _ in range(4):
        settle_day(store, DAY, "r1", products)
        assert [store.query(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in tables] == first


def test_channels_a_product_does_not_price_are_not_accrued_nor_audited(
    store: Store, tmp_path: Path
) -> None:
    """A site with controlled load (E2) on sh-tou, which prices none: the pass does not read
    E2, so its accrual is NULL, not 0 kWh, and the audit (which once failed every such site,
    23 metered kWh against 0 accrued, and so every night's issue) checks import alone."""
    _customers(store, tmp_path, SYDNEY.replace("sh-flat", "sh-tou"))
    start, _ = market_day_bounds(DAY)
    ts = [start + dt.timedelta(minutes=30 * k) for k in range(48)]
    add_reads(
        store,
        pl.DataFrame(
            {
                "nmi": ["NMI1"] * 96,
                "suffix": ["E1"] * 48 + ["E2"] * 48,
                "interval_start": ts + ts,
                "interval_minutes": [30] * 96,
                "kwh": [1.0] * 48 + [0.5] * 48,
            },
            schema_overrides={"interval_start": pl.Datetime("us", "UTC")},
        ),
    )
    settle_day(store, DAY, "r1", load_products(PRODUCTS))
    assert store.query(
        "SELECT sum(import_kwh), count(controlled_kwh), count(controlled_minutes) FROM accrual_days"
    ).fetchall() == [(48.0, 0, 0)]
    audit = next(
        a for a in run_audits(store, DAY, DAY) if a.name == "accrued_energy_equals_metered"
    )
    assert audit.passed, audit.sample


def test_only_interval_charges_accrue_and_foreign_sites_are_skipped(
    store: Store, tmp_path: Path
) -> None:
    """std-block-demand's block and demand components are priced over the whole period at close,
    so its day accrues only its feed-in (its controlled load has no reads here), while its
    import energy is counted; a VIC1 site on an NSW1 product and an account on a product with no file are
    skipped (the close holds them)."""
    _customers(
        store,
        tmp_path,
        SYDNEY.replace("sh-flat", "std-block-demand"),
        SYDNEY.replace("A1,NMI1,NSW1", "A2,NMI2,VIC1"),
        SYDNEY.replace("A1,NMI1", "A3,NMI3").replace("sh-flat", "no-such-product"),
    )
    for nmi in ("NMI1", "NMI2", "NMI3"):
        _market_day_reads(store, DAY, nmi)
    counts = settle_day(store, DAY, "r1", load_products(PRODUCTS))
    assert counts["accrued_pieces"] == 2 and counts["accrual_skipped"] == 4
    assert store.query("SELECT DISTINCT component FROM accrual_lines").fetchall() == [
        ("Solar feed-in credit",)
    ]
    assert store.query(
        "SELECT account, sum(import_kwh) FROM accrual_days GROUP BY ALL"
    ).fetchall() == [("A1", 48.0)]


def test_accruals_add_up_to_the_bills_and_the_audit_checks_their_energy(tmp_path: Path) -> None:
    """Over a closed month the accrued lines of each bill's days, summed, are its energy and
    feed-in lines to the cent (flat, TOU and spot-linked products); the audit
    accrued_energy_equals_metered passes, and names the row once an accrual is tampered."""
    cfg = load_config(build_inbox(tmp_path))
    end = START + dt.timedelta(days=DAYS - 1)
    with Store.open(tmp_path / "store.duckdb") as store:
        result = run_nightly(store, cfg, START, end)
        assert result.exit_code == ExitCode.OK, result.message
        rows = store.query(
            """
            SELECT b.account, l.component, l.detail, l.quantity, l.amount_ex_gst,
                   sum(d.quantity_kwh) AS accrued_kwh, round(sum(d.amount), 2)::DECIMAL(18, 2) AS accrued
            FROM bills b JOIN bill_lines l USING (bill_id)
            LEFT JOIN daily_charges d ON d.account = b.account AND d.component = l.component
             AND d.detail = coalesce(l.detail, '') AND d.local_date >= b.period_start
             AND d.local_date < b.period_end
            WHERE l.unit = 'kWh' GROUP BY ALL ORDER BY ALL
            """
        ).fetchall()
        assert len(rows) == 7  # A1 energy, feed-in; A2 energy, export; A3 three TOU periods
        for account, component, detail, kwh, amount, accrued_kwh, accrued in rows:
            assert accrued == amount, (account, component, detail)
            assert float(accrued_kwh) == pytest.approx(kwh, abs=1e-6)
        assert store.query("SELECT bool_and(complete) FROM daily_charges").fetchall() == [(True,)]
        audit = next(a for a in result.audits if a.name == "accrued_energy_equals_metered")
        assert audit.passed
        store.con.execute(
            "UPDATE accrual_days SET export_kwh = export_kwh + 0.001 "
            "WHERE account = 'A2' AND local_date = ?",
            [START + dt.timedelta(days=3)],
        )
        again = next(
            a for a in run_audits(store, START, end) if a.name == "accrued_energy_equals_metered"
        )
        assert again.failing_rows == 1
        assert again.sample[0]["account"] == "A2" and again.sample[0]["suffix"] == "B1"
    # the analyst's view of it: `fairshare explain charges` (JSON for machines)
    res = CliRunner().invoke(
        app,
        ["explain", "charges", "A3", "--from", "2024-07-01", "--to", "2024-07-02", "--json",
         "--db", str(tmp_path / "store.duckdb")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    body = json.loads(res.stdout)
    periods = [(r["local_date"], r["detail"]) for r in body["charges"]]
    assert periods == [(d, p) for d in ("2024-07-01", "2024-07-02") for p in ("off-peak", "peak", "shoulder")]  # fmt: skip
    assert all(r["complete"] and r["product"] == "sh-tou" for r in body["charges"])
    # --out: the same rows as Parquet, the amounts unrounded as accrued
    res = CliRunner().invoke(
        app,
        ["explain", "charges", "A3", "--from", "2024-07-01", "--to", "2024-07-02",
         "--out", str(tmp_path / "a3.parquet"), "--db", str(tmp_path / "store.duckdb")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    frame = pl.read_parquet(tmp_path / "a3.parquet")
    assert frame.height == len(body["charges"])
    assert frame["amount"].to_list() == [r["amount"] for r in body["charges"]]
