"""Channels of one meter read at different interval lengths (export every 5 minutes on a
30-minute import meter, or the reverse): every read is billed once, at its own interval's price,
on the polars reference as on the fast path.

October 2024 in Sydney has 31 x 48 - 2 = 1486 half-hours (6 October is a 23-hour day), so
1486 x 6 = 8916 five-minute intervals. The reference used to join export reads to import reads
on the start alone and price them at import's length: it dropped 5 of every 6 five-minute export
reads, and priced a 30-minute export read at the first 5-minute price of its half-hour.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl
from test_billing_support import PRODUCTS, add_customer, add_prices, add_reads, half_hours

from settlement.billing import bill_accounts, load_products
from settlement.store import Store
from tariffs.product import Product

OCT, NOV = date(2024, 10, 1), date(2024, 11, 1)

# Each bill of a run with its non-zero lines: component, detail, kWh (3 decimals), amount,
# number of intervals, first and last day. The reference also writes a zero line for a channel
# the meter lacks; the fast path does not.
BILLS_SQL = (
    "SELECT b.account, b.product, b.hold_reason, b.total_ex_gst, b.estimated_intervals, "
    "list_sort(list(l.component || '|' || l.detail || '|' || round(l.quantity, 3)::VARCHAR || '|' "
    "|| l.amount_ex_gst::VARCHAR || '|' || l.n_intervals::VARCHAR || '|' || "
    "l.date_from::VARCHAR || '|' || l.date_to::VARCHAR) FILTER (WHERE l.amount_ex_gst <> 0)) "
    "FROM bills b LEFT JOIN bill_lines l USING (bill_id) WHERE b.run_id = ? "
    "GROUP BY ALL ORDER BY 1, 2"
)


def _both_paths(store: Store, chosen: dict[str, Product]) -> dict[str, tuple[object, ...]]:
    """Bill October on the polars reference and on the fast path; assert the same bills and
    lines (amounts, kWh and interval counts); return them by account."""
    ref = bill_accounts(store, OCT, NOV, None, chosen, engine="polars")
    fast = bill_accounts(store, OCT, NOV, None, chosen)
    a = store.con.execute(BILLS_SQL, [ref.run_id]).fetchall()
    assert a == store.con.execute(BILLS_SQL, [fast.run_id]).fetchall()
    return {str(r[0]): r for r in a}


def _five_minutes(hh: pl.Series) -> pl.Series:
    return pl.datetime_range(
        hh[0], hh[-1] + timedelta(minutes=30), "5m", closed="left", eager=True, time_zone="UTC"
    )


def _line(bill: tuple[object, ...], component: str) -> str:
    (line,) = [x for x in bill[5] if x.startswith(component + "|")]  # type: ignore[attr-defined]
    return str(line)


def test_five_minute_export_on_thirty_minute_import_is_billed_in_full(store: Store) -> None:
    """sh-flat, import 0.5 kWh every 30 minutes, export 0.1 kWh every 5 minutes. By hand:
    energy 1486 x 0.5 = 743 kWh x 0.305 = 226.62 (1486 intervals); feed-in 8916 x 0.1 =
    891.6 kWh x 0.05 = 44.58 credit (8916 intervals). The reference credited 148.6 kWh (7.43)."""
    hh = half_hours(OCT, 31)
    five = _five_minutes(hh)
    assert len(hh) == 1486 and len(five) == 8916
    add_customer(store, "A", [("sh-flat", date(2024, 7, 1), None)])
    add_reads(store, "NMIA", "E1", hh, 0.5)
    add_reads(store, "NMIA", "B1", five, 0.1, minutes=5)
    bills = _both_paths(store, {"sh-flat": load_products(PRODUCTS)["sh-flat"]})
    bill = bills["A"]
    assert bill[2] is None
    assert _line(bill, "Energy") == "Energy||743.0|226.62|1486|2024-10-01|2024-10-31"
    assert (
        _line(bill, "Solar feed-in credit")
        == "Solar feed-in credit||891.6|-44.58|8916|2024-10-01|2024-10-31"
    )


def test_thirty_minute_export_on_five_minute_import_is_priced_at_the_half_hour(
    store: Store,
) -> None:
    """dyn-passthrough (export at spot/1000 per kWh), import 0.05 kWh every 5 minutes, export
    1 kWh every 30 minutes, 5-minute prices of 600 $/MWh in the first 5 minutes of each half-hour
    and 0 in the other five: the half-hour average is 100 $/MWh. By hand: export 1486 x 1 kWh x
    100 / 1000 = 148.60 credit over 1486 intervals; import 8916 x 0.05 = 445.8 kWh over 8916
    intervals. The reference priced each export read at its first 5-minute price: 1486 x 0.60 =
    891.60 credit."""
    hh = half_hours(OCT, 31)
    five = _five_minutes(hh)
    add_customer(store, "B", [("dyn-passthrough", date(2024, 7, 1), None)])
    add_reads(store, "NMIB", "E1", five, 0.05, minutes=5)
    add_reads(store, "NMIB", "B1", hh, 1.0)
    add_prices(store, five, [600.0 if i % 6 == 0 else 0.0 for i in range(len(five))], minutes=5)
    chosen = {"dyn-passthrough": load_products(PRODUCTS)["dyn-passthrough"]}
    bill = _both_paths(store, chosen)["B"]
    assert bill[2] is None
    assert (
        _line(bill, "Export (dynamic)")
        == "Export (dynamic)|spot-linked|1486.0|-148.60|1486|2024-10-01|2024-10-31"
    )
    assert _line(bill, "Energy (dynamic)").startswith("Energy (dynamic)|spot-linked|445.8|")
    assert "|8916|" in _line(bill, "Energy (dynamic)")
    # explain's drill-down: one row per export read, each at its half-hour's average price
    from settlement.billing_explain import explain_bill

    (bill_id,) = store.con.execute(
        "SELECT bill_id FROM bills WHERE account = 'B' ORDER BY created_at DESC LIMIT 1"
    ).fetchone() or ("",)
    ex = explain_bill(store, str(bill_id))
    export = ex.intervals.filter(pl.col("component") == "Export (dynamic)")
    assert ex.reproduced is True
    assert export.height == 1486
    assert round(float(export["amount"].sum()), 2) == -148.60


def test_block_and_demand_product_bills_every_export_read_at_any_length(store: Store) -> None:
    """std-block-demand (reference only: blocks and demand have no SQL form). Three meters with
    the same half-hourly import (random, so the demand peaks and the block split are real) and
    0.6 kWh of export per half-hour: S reads both channels every 30 minutes; F reads export every
    5 minutes (0.1 kWh); C reads import every 5 minutes (a sixth of each half-hour's kWh, so the
    same kWh per half-hour) and export every 30 minutes. F's bill equals S's line for line, and
    C's except for demand (the mean of C's three highest 5-minute kW, as for any 5-minute meter);
    the feed-in is 1486 x 0.6 = 891.6 kWh x 0.05 = 44.58 credit on each (the reference credited
    F 148.6 kWh, 7.43). Blocks and demand use import reads only: F's block and demand lines count
    S's intervals (not F's export reads), C's demand counts 264 weekday 15:00-21:00 half-hours x
    6 = 1584 five-minute import reads (not C's export reads at those half-hours)."""
    rng = np.random.default_rng(5)
    hh = half_hours(OCT, 31)
    five = _five_minutes(hh)
    imp = rng.uniform(0, 3, len(hh)).round(3)
    for acct in ("S", "F", "C"):
        add_customer(store, acct, [("std-block-demand", date(2024, 7, 1), None)])
    add_reads(store, "NMIS", "E1", hh, imp.tolist())
    add_reads(store, "NMIS", "B1", hh, 0.6)
    add_reads(store, "NMIF", "E1", hh, imp.tolist())
    add_reads(store, "NMIF", "B1", five, 0.1, minutes=5)
    add_reads(store, "NMIC", "E1", five, np.repeat(imp / 6, 6).tolist(), minutes=5)
    add_reads(store, "NMIC", "B1", hh, 0.6)
    chosen = {"std-block-demand": load_products(PRODUCTS)["std-block-demand"]}
    run = bill_accounts(store, OCT, NOV, None, chosen, engine="polars")
    assert run.held == 0, run.holds
    rows = store.con.execute(BILLS_SQL, [run.run_id]).fetchall()
    bills = {str(r[0]): r for r in rows}

    def amounts(acct: str, but: str = "") -> list[tuple[str, ...]]:  # component, detail, amount
        lines = [x.split("|") for x in bills[acct][5]]  # type: ignore[attr-defined]
        return sorted((x[0], x[1], x[3]) for x in lines if x[0] != but)

    assert amounts("F") == amounts("S")
    assert amounts("C", but="Demand charge") == amounts("S", but="Demand charge")
    assert bills["F"][3] == bills["S"][3]
    demand = _line(bills["C"], "Demand charge").split("|")
    assert demand[4] == "1584"
    assert (
        _line(bills["S"], "Solar feed-in credit")
        == "Solar feed-in credit||891.6|-44.58|1486|2024-10-01|2024-10-31"
    )
    assert (
        _line(bills["F"], "Solar feed-in credit")
        == "Solar feed-in credit||891.6|-44.58|8916|2024-10-01|2024-10-31"
    )
    assert (
        _line(bills["C"], "Solar feed-in credit")
        == "Solar feed-in credit||891.6|-44.58|1486|2024-10-01|2024-10-31"
    )
    for comp in ("Demand charge|", "Energy (block)|"):
        f, same = (sorted(x for x in bills[a][5] if x.startswith(comp)) for a in ("F", "S"))  # type: ignore[attr-defined]
        assert f == same and f
