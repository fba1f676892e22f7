"""Nightly accruals of product charges (settlement.accruals): pieces, amounts, bills, audit."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

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
from tests.test_wholesale import add_reads

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
        "import_minutes FROM accrual_days ORDER BY local_date"
    ).fetchall()
    utc = dt.UTC
    assert days == [
        (DAY, dt.datetime(2024, 10, 14, 14, tzinfo=utc), dt.datetime(2024, 10, 15, 13, tzinfo=utc),
         1440, Decimal("46"), Decimal("23"), 1380),
        (DAY + dt.timedelta(1), dt.datetime(2024, 10, 15, 13, tzinfo=utc),
         dt.datetime(2024, 10, 15, 14, tzinfo=utc), 1440, Decimal("2"), Decimal("1"), 60),
    ]  # fmt: skip
    lines = store.query(
        "SELECT local_date, component, quantity_kwh, amount, taxable FROM accrual_lines "
        "ORDER BY local_date, line_order"
    ).fetchall()
    assert lines == [
        (DAY, "Energy", Decimal("46"), Decimal("14.03"), True),
        (DAY, "Solar feed-in credit", Decimal("23"), Decimal("-1.15"), False),
        (DAY + dt.timedelta(1), "Energy", Decimal("2"), Decimal("0.61"), True),
        (DAY + dt.timedelta(1), "Solar feed-in credit", Decimal("1"), Decimal("-0.05"), False),
    ]
    assert store.query("SELECT bool_or(complete) FROM daily_charges").fetchall() == [(False,)]
    # the next market day completes local D+1: 2 + 46 half-hours, 48 x 0.3050 = 14.64
    _market_day_reads(store, DAY + dt.timedelta(1))
    settle_day(store, DAY + dt.timedelta(1), "r1", load_products(PRODUCTS))
    row = store.query(
        "SELECT quantity_kwh, amount, n_intervals, complete FROM daily_charges "
        "WHERE local_date = ? AND component = 'Energy'",
        [DAY + dt.timedelta(1)],
    ).fetchall()
    assert row == [(Decimal("48"), Decimal("14.64"), 48, True)]


def test_resettling_replaces_the_accruals_identically(store: Store, tmp_path: Path) -> None:
    _customers(store, tmp_path, SYDNEY)
    _market_day_reads(store, DAY)
    products = load_products(PRODUCTS)
    settle_day(store, DAY, "r1", products)
    first = [store.query(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in ("accrual_days", "accrual_lines")]  # fmt: skip
    settle_day(store, DAY, "r1", products)
    again = [store.query(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in ("accrual_days", "accrual_lines")]  # fmt: skip
    assert again == first and len(first[1]) == 4


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
    ).fetchall() == [("A1", Decimal("48"))]


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
                   sum(d.quantity_kwh) AS accrued_kwh, round(sum(d.amount), 2) AS accrued
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
