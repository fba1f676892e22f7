"""Bill runs against a real store file: switches, holds, estimates, audits, shadow bills."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from test_billing_support import PRODUCTS, add_customer, add_prices, add_reads, half_hours

from settlement.billing import bill_accounts, load_products
from settlement.store import Store
from tariffs.errors import ConfigError, ProductFileError

JUL, AUG = date(2024, 7, 1), date(2024, 8, 1)


@pytest.fixture()
def loaded(store: Store) -> Store:
    # A1 switches from sh-tou to sh-flat on 15 July (mid-cycle)
    add_customer(
        store, "A1", [("sh-tou", JUL, date(2024, 7, 15)), ("sh-flat", date(2024, 7, 15), None)]
    )
    add_customer(store, "A2", [("sh-tou", JUL, None)])  # 3 reads missing -> held
    add_customer(store, "A3", [("dyn-passthrough", JUL, None)])  # a price missing -> held
    add_customer(store, "A4", [("dyn-passthrough", JUL, None)], move_in=date(2024, 7, 10))
    hh = half_hours(JUL, 31)
    add_reads(store, "NMIA1", "E1", hh, 0.5)
    add_reads(store, "NMIA1", "B1", hh, 0.1)
    add_reads(store, "NMIA2", "E1", hh[:-3], 0.5)
    add_reads(store, "NMIA3", "E1", hh, 0.5)
    add_reads(store, "NMIA4", "E1", hh[:-200], 0.4)
    add_reads(store, "NMIA4", "E1", hh[-200:], 0.4, quality="E")  # forward estimates, flagged
    prices = half_hours(JUL, 31)
    add_prices(store, prices.filter(prices != prices[100]), 80.0)  # 3 July: before A4 moves in
    return store


def test_run_bills_switches_holds_and_audits(loaded: Store) -> None:
    res = bill_accounts(loaded, JUL, AUG, product_dir=PRODUCTS)
    bills = {
        r[0]: r[1:]
        for r in loaded.con.execute(
            "SELECT account || ':' || product, period_start::VARCHAR, period_end::VARCHAR, status,"
            " hold_reason, estimated_intervals, total_inc_gst FROM bills ORDER BY 1"
        ).fetchall()
    }
    assert bills["A1:sh-tou"][:3] == ("2024-07-01", "2024-07-15", "draft")
    assert bills["A1:sh-flat"][:3] == ("2024-07-15", "2024-08-01", "draft")
    assert bills["A2:sh-tou"][2:4] == ("held", "missing 3 import (E1) read(s)")
    assert bills["A2:sh-tou"][5] is None  # a held bill has no total, never a zero
    assert bills["A3:dyn-passthrough"][2:4] == ("held", "missing spot price for 1 interval(s)")
    a4 = bills["A4:dyn-passthrough"]
    assert a4[0] == "2024-07-10" and a4[2] == "draft" and a4[4] == 200
    assert (res.bills, res.held) == (3, 2)
    # supply prorated: 14 days on sh-tou, 17 on sh-flat at 1.0450/day
    supply = loaded.con.execute(
        "SELECT bill_id, quantity, amount_ex_gst FROM bill_lines WHERE component = 'Daily supply charge'"
        " AND bill_id LIKE 'A1/%' ORDER BY bill_id"
    ).fetchall()
    assert [(q, a) for _, q, a in supply] == [(17.0, Decimal("17.77")), (14.0, Decimal("14.63"))]
    for view in ("audit_bill_line_sums", "audit_duplicate_bills", "audit_feed_in_gst"):
        assert loaded.con.execute(f"SELECT count(*) FROM {view}").fetchone() == (0,)
    versions = loaded.con.execute(
        "SELECT product, length(content) > 100 FROM product_versions ORDER BY 1"
    ).fetchall()
    assert [v[0] for v in versions] == ["dyn-passthrough", "sh-flat", "sh-tou"]


def test_rerun_supersedes_drafts_and_shadow_bills_every_product(loaded: Store) -> None:
    bill_accounts(loaded, JUL, AUG, product_dir=PRODUCTS)
    bill_accounts(loaded, JUL, AUG, product_dir=PRODUCTS)
    counts = dict(loaded.con.execute("SELECT status, count(*) FROM bills GROUP BY 1").fetchall())
    assert counts == {"superseded": 5, "draft": 3, "held": 2}
    products = load_products(PRODUCTS)
    chosen = {k: products[k] for k in ("sh-flat", "sh-tou")}
    res = bill_accounts(loaded, JUL, AUG, accounts=["A1", "A4"], products=chosen, shadow=True)
    rows = loaded.con.execute(
        "SELECT account, product, period_start::VARCHAR, status FROM bills WHERE run_id = ? ORDER BY 1, 2",
        [res.run_id],
    ).fetchall()
    assert rows == [
        ("A1", "sh-flat", "2024-07-01", "shadow"),
        ("A1", "sh-tou", "2024-07-01", "shadow"),
        ("A4", "sh-flat", "2024-07-10", "shadow"),
        ("A4", "sh-tou", "2024-07-10", "shadow"),
    ]


def test_unknown_product_and_bad_file_are_named(loaded: Store, tmp_path: object) -> None:
    products = load_products(PRODUCTS)
    with pytest.raises(ConfigError, match="dyn-passthrough"):
        bill_accounts(
            loaded,
            JUL,
            AUG,
            products={"sh-tou": products["sh-tou"], "sh-flat": products["sh-flat"]},
        )
    from pathlib import Path

    d = Path(str(tmp_path)) / "p"
    d.mkdir()
    (d / "bad.toml").write_text(
        (PRODUCTS / "sh-flat.toml").read_text().replace('value = "0.3050"', 'value = "abc"')
    )
    with pytest.raises(ProductFileError, match=r"bad.toml: components\.1\.energy\.rate\.0\.value"):
        load_products(d)


def test_sql_fast_path_matches_the_polars_reference(loaded: Store) -> None:
    # spot prices with negative values and a DST-free July; A1 has solar export
    ref = bill_accounts(loaded, JUL, AUG, product_dir=PRODUCTS, engine="polars")
    fast = bill_accounts(loaded, JUL, AUG, product_dir=PRODUCTS)
    q = (
        "SELECT b.account, b.product, b.hold_reason, b.total_ex_gst, b.gst, "
        "list_sort(list(l.component || '|' || l.detail || '|' || l.amount_ex_gst::VARCHAR) "
        "FILTER (WHERE l.amount_ex_gst <> 0)) FROM bills b LEFT JOIN bill_lines l USING (bill_id) "
        "WHERE b.run_id = ? GROUP BY ALL ORDER BY 1, 2"
    )
    assert (
        loaded.con.execute(q, [ref.run_id]).fetchall()
        == loaded.con.execute(q, [fast.run_id]).fetchall()
    )


@pytest.mark.parametrize(
    "corrupt",
    [
        "UPDATE bill_lines SET amount_ex_gst = amount_ex_gst + 0.01 WHERE bill_id = "
        "(SELECT min(bill_id) FROM bills WHERE run_id = {run} AND status <> 'held') AND line_no = 1",
        "UPDATE bill_lines SET gst = 0.01 WHERE NOT taxable AND bill_id IN "
        "(SELECT bill_id FROM bills WHERE run_id = {run})",
    ],
)
def test_a_failed_run_audit_rolls_the_run_back(
    loaded: Store, monkeypatch: pytest.MonkeyPatch, corrupt: str
) -> None:
    import settlement.billing as billing
    from tariffs.errors import AuditFailedError

    real = billing.write_bills

    def corrupting(store: Store, run_id: int, *args: object, **kwargs: object) -> None:
        real(store, run_id, *args, **kwargs)  # type: ignore[arg-type]
        store.con.execute(corrupt.format(run=int(run_id)))

    monkeypatch.setattr(billing, "write_bills", corrupting)
    with pytest.raises(AuditFailedError, match=r"audit audit_(bill_line_sums|feed_in_gst)"):
        bill_accounts(loaded, JUL, AUG, product_dir=PRODUCTS)
    assert loaded.con.execute("SELECT count(*) FROM bills").fetchone() == (0,)


def test_a_site_outside_the_products_region_is_held(store: Store) -> None:
    """sh-tou is an NSW1 product (Ausgrid network rates, NSW public holidays): a Victorian site
    enrolled on it is held with the reason, never billed on NSW's calendar (Melbourne Cup day,
    5 Nov 2024, would have been a weekday peak); the NSW site is billed."""
    add_customer(store, "N1", [("sh-tou", JUL, None)])
    add_customer(store, "V1", [("sh-tou", JUL, None)], region="VIC1", tz="Australia/Melbourne")
    hh = half_hours(JUL, 31)
    add_reads(store, "NMIN1", "E1", hh, 0.5)
    add_reads(store, "NMIV1", "E1", hh, 0.5)
    res = bill_accounts(store, JUL, AUG, product_dir=PRODUCTS)
    rows = store.con.execute(
        "SELECT account, status, hold_reason FROM bills ORDER BY account"
    ).fetchall()
    assert rows == [
        ("N1", "draft", None),
        ("V1", "held", "product sh-tou is for market region NSW1 (its network rates, public"
         " holidays and spot price); the site is in VIC1"),
    ]  # fmt: skip
    assert (res.bills, res.held) == (1, 1)
