"""A meter exchange mid-cycle (30-minute reads, then 5-minute) is a complete month, not a hold."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from settlement.billing import bill_accounts, load_products
from settlement.customers import COLUMNS, ingest_customer_file
from settlement.store import Store
from tests.test_wholesale import add_reads

REPO = Path(__file__).resolve().parents[1]
AEST = dt.timezone(dt.timedelta(hours=10))  # Sydney in July: AEST, no daylight saving


def _reads(start: dt.datetime, n: int, minutes: int, kwh: float) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "nmi": ["4102000001"] * n,
            "suffix": ["E1"] * n,
            "interval_start": [start + dt.timedelta(minutes=minutes * i) for i in range(n)],
            "interval_minutes": [minutes] * n,
            "kwh": [kwh] * n,
        },
        schema_overrides={"interval_start": pl.Datetime("us", "UTC")},
    )


@pytest.mark.parametrize("engine_products", [("sh-flat",), ("sh-tou",)])
def test_thirty_then_five_minute_reads_bill_in_full(
    store: Store, tmp_path: Path, engine_products: tuple[str, ...]
) -> None:
    (product,) = engine_products
    row = f"A1,4102000001,NSW1,Australia/Sydney,1.0,1.0,monthly,1,2024-06-01,,0,0,0,0,false,false,,{product},2024-06-01,"
    (tmp_path / "c.csv").write_text(",".join(COLUMNS) + "\n" + row + "\n")
    ingest_customer_file(store, tmp_path / "c.csv")
    july = dt.datetime(2024, 7, 1, tzinfo=AEST)
    add_reads(store, _reads(july, 30 * 48, 30, 0.5))  # 1-30 July, 30-minute meter
    add_reads(store, _reads(july + dt.timedelta(days=30), 288, 5, 0.1))  # 31 July, new meter
    products = load_products(REPO / "data" / "products")
    res = bill_accounts(
        store, dt.date(2024, 7, 1), dt.date(2024, 7, 2), products={product: products[product]}
    )
    assert res.held == 0, res.holds
    energy = store.query(
        "SELECT sum(quantity) FROM bill_lines WHERE unit = 'kWh' AND component = 'Energy'"
    ).fetchall()[0][0]
    assert energy == pytest.approx(30 * 48 * 0.5 + 288 * 0.1)  # 720 + 28.8 kWh


def test_a_real_gap_is_still_held(store: Store, tmp_path: Path) -> None:
    row = "A1,4102000001,NSW1,Australia/Sydney,1.0,1.0,monthly,1,2024-06-01,,0,0,0,0,false,false,,sh-flat,2024-06-01,"
    (tmp_path / "c.csv").write_text(",".join(COLUMNS) + "\n" + row + "\n")
    ingest_customer_file(store, tmp_path / "c.csv")
    july = dt.datetime(2024, 7, 1, tzinfo=AEST)
    add_reads(store, _reads(july, 30 * 48, 30, 0.5))
    add_reads(store, _reads(july + dt.timedelta(days=30), 287, 5, 0.1))  # one 5-minute read short
    products = load_products(REPO / "data" / "products")
    res = bill_accounts(
        store, dt.date(2024, 7, 1), dt.date(2024, 7, 2), products={"sh-flat": products["sh-flat"]}
    )
    assert res.held == 1 and "missing 1 import (E1) read(s)" in res.holds[0][2]
