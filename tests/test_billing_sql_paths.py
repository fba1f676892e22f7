"""The DuckDB fast path equals the polars reference on random data across a daylight-saving change
(Sydney, 6 October 2024) and a public holiday (Labour Day, 7 October), with negative prices."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from typing import Any
from unittest.mock import patch

import numpy as np
import pytest
from test_billing_support import PRODUCTS, add_customer, add_prices, add_reads, half_hours

from settlement import accruals, billing_sql
from settlement.billing import bill_accounts, load_products
from settlement.store import Store
from settlement.wholesale import settle_day
from tariffs.product import Product, parse_product

OCT, NOV = date(2024, 10, 1), date(2024, 11, 1)


# Each bill of a run with its lines (component, detail, amount, first and last day). The
# reference also writes a zero line for a channel the meter lacks; the fast path does not.
BILLS_SQL = (
    "SELECT b.account, b.product, b.period_start, b.hold_reason, b.total_ex_gst, b.gst, "
    "b.estimated_intervals, list_sort(list(l.component || '|' || l.detail || '|' || "
    "l.amount_ex_gst::VARCHAR || '|' || l.date_from::VARCHAR || '|' || l.date_to::VARCHAR) "
    "FILTER (WHERE l.amount_ex_gst <> 0)) "
    "FROM bills b LEFT JOIN bill_lines l USING (bill_id) WHERE b.run_id = ? "
    "GROUP BY ALL ORDER BY 1, 2, 3"
)

# every line's quantity and unrounded amount, as their exact bits
QUANTITIES_SQL = (
    "SELECT b.account, b.product, b.period_start, l.component, l.detail, l.date_from, "
    "l.quantity, l.rate FROM bills b JOIN bill_lines l USING (bill_id) WHERE b.run_id = ? "
    "ORDER BY ALL"
)


@contextmanager
def covered_spy() -> Iterator[list[int]]:
    """Within the block, every segment :func:`settlement.accruals.covered_segments` finds
    billable from its accruals, in the order found."""
    covered: list[int] = []
    original = accruals.covered_segments

    def spy(*args: Any) -> list[int]:
        out = original(*args)
        covered.extend(out)
        return out

    with patch.object(accruals, "covered_segments", spy):
        yield covered


def _october_accrued(store: Store, account: str, products: dict[str, Product]) -> None:
    """A Sydney site of ``account`` enrolled on the one product of ``products``, with half-hourly
    import reads from 29 September to 2 November, its market days 30 September to 2 November
    settled and accrued."""
    (product,) = products
    hh = half_hours(date(2024, 9, 29), 35)
    add_customer(store, account, [(product, date(2024, 7, 1), None)])
    add_reads(store, f"NMI{account}", "E1", hh, [0.25 + (k % 48) / 96 for k in range(len(hh))])
    for k in range(34):
        settle_day(store, date(2024, 9, 30) + timedelta(days=k), "t", products)


def _both_paths(
    store: Store, chosen: dict[str, Product], shadow: bool, from_accruals: bool = True
) -> list[tuple[object, ...]]:
    """Bill October on the polars reference, on the one-pass fast path and, once every market
    day from 30 September to 1 November is settled with its accruals, from the accruals; assert
    the same bills and lines on all three; return them. Segments whose days are not all accrued
    (shadow products, cycles running into November) are billed by the pass in the same run."""
    ref = bill_accounts(store, OCT, NOV, None, chosen, shadow=shadow, engine="polars")
    fast = bill_accounts(store, OCT, NOV, None, chosen, shadow=shadow, engine="pass")
    a = store.con.execute(BILLS_SQL, [ref.run_id]).fetchall()
    assert a == store.con.execute(BILLS_SQL, [fast.run_id]).fetchall()
    for k in range(33):
        settle_day(store, date(2024, 9, 30) + timedelta(days=k), "t", chosen)
    with covered_spy() as covered:
        accrued = bill_accounts(store, OCT, NOV, None, chosen, shadow=shadow)
    # every bill not held up front was priced: some of them from their accruals (unless told
    # that none may be: ``from_accruals=False``)
    if from_accruals:
        assert covered or all(r[3] is not None for r in a), "nothing was billed from accruals"
    else:
        assert not covered
    assert a == store.con.execute(BILLS_SQL, [accrued.run_id]).fetchall()
    # the accrued days add up to the pass's own sums to the last bit (exact sums, not floats)
    quantities = [
        store.con.execute(QUANTITIES_SQL, [run]).fetchall() for run in (fast.run_id, accrued.run_id)
    ]
    assert quantities[0] == quantities[1]
    return a


def test_fast_path_equals_reference_on_random_dst_month(store: Store) -> None:
    rng = np.random.default_rng(7)
    hh = half_hours(OCT, 31)
    assert len(hh) == 31 * 48 - 2  # one 23-hour day
    for i, prod in enumerate(["sh-tou", "dyn-passthrough", "sh-flat", "sh-tou"]):
        acct = f"R{i}"
        add_customer(store, acct, [(prod, date(2024, 7, 1), None)], dlf=1.01 + i / 100, mlf=0.98)
        add_reads(store, f"NMI{acct}", "E1", hh, rng.uniform(0, 2, len(hh)).round(3).tolist())
        if i % 2 == 0:
            add_reads(store, f"NMI{acct}", "B1", hh, rng.uniform(0, 1.5, len(hh)).round(3).tolist())
        if i == 2:
            add_reads(store, f"NMI{acct}", "E2", hh, rng.uniform(0, 1, len(hh)).round(3).tolist())
    add_prices(store, hh, rng.normal(60, 150, len(hh)).round(2).tolist())
    products = load_products(PRODUCTS)
    chosen = {k: products[k] for k in ("sh-tou", "dyn-passthrough", "sh-flat")}
    for shadow in (False, True):
        a = _both_paths(store, chosen, shadow)
        assert all(r[3] is None for r in a) and len(a) == (12 if shadow else 4)
    # a day row without its stored count of reads (schema v12) is cleaned and counted element
    # by element on the day-array pass, not left out: the same bills
    store.con.execute(
        "UPDATE meter_days SET n_reads = NULL WHERE channel_id = (SELECT min(channel_id)"
        " FROM meter_days)"
    )
    assert _both_paths(store, chosen, True) == a


@pytest.fixture(autouse=True, params=["reads", "days"])
def layout(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Every test of this module runs on both passes: per day array (``meter_days``, the
    default, :mod:`settlement.billing_days`) and per read (``FAIRSHARE_PASS=reads``); the chosen
    one must be the one that ran."""
    layout = str(request.param)
    monkeypatch.setenv("FAIRSHARE_PASS", layout)
    calls: list[int] = []
    original = billing_sql.array_pass

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(billing_sql, "array_pass", spy)
    yield layout
    assert bool(calls) == (layout == "days")


def _capped_products() -> dict[str, Product]:
    """dyn-passthrough with a retail cap and floor that bind on this data, and a feed-in floor."""
    text = (PRODUCTS / "dyn-passthrough.toml").read_text()
    text = text.replace('value = "17.5000"', 'value = "0.3000"').replace(
        'value = "-1.0000"', 'value = "0.0500"'
    )
    capped = parse_product(text.replace('id = "dyn-passthrough"', 'id = "dyn-capped"'), "capped")
    products = load_products(PRODUCTS)
    return {"dyn-capped": capped, "sh-tou": products["sh-tou"], "sh-flat": products["sh-flat"]}


def test_one_pass_equals_reference_with_clamps_flags_gaps_and_switches(store: Store) -> None:
    """The one-pass fast path against the reference where every special case shows at once:
    retail floor and cap binding on spikes and negative prices, quality E (billed, flagged) and N
    (missing) reads, a missing price, different cycle days, a mid-cycle switch and a move-in."""
    rng = np.random.default_rng(11)
    hh = half_hours(date(2024, 9, 15), 70)
    chosen = _capped_products()
    cases = [
        ("C0", [("dyn-capped", date(2024, 1, 1), None)], {}),
        ("C1", [("sh-tou", date(2024, 1, 1), date(2024, 10, 12)),
                ("dyn-capped", date(2024, 10, 12), None)], {"cycle_day": 5}),
        ("C2", [("sh-flat", date(2024, 1, 1), None)], {"move_in": date(2024, 10, 9)}),
        ("C3", [("dyn-capped", date(2024, 1, 1), None)], {"cycle_day": 20}),
        ("C4", [("sh-tou", date(2024, 1, 1), None)], {}),
    ]  # fmt: skip
    for i, (acct, enrol, kw) in enumerate(cases):
        add_customer(store, acct, enrol, dlf=1.02 + i / 100, mlf=0.97, **kw)  # type: ignore[arg-type]
        q = ["A"] * len(hh)
        if acct == "C3":  # a few forward estimates: billed and flagged
            q[1700:1710] = ["E"] * 10  # 20 October, in C3's cycle
        if acct == "C4":  # a substituted-null day: missing, so the bill is held
            q[900:948] = ["N"] * 48  # 3-4 October
        for quality in sorted(set(q)):
            idx = [k for k, x in enumerate(q) if x == quality]
            add_reads(store, f"NMI{acct}", "E1", hh.gather(idx),
                      rng.uniform(0, 2, len(idx)).round(3).tolist(), quality=quality)  # fmt: skip
        add_reads(store, f"NMI{acct}", "B1", hh, rng.uniform(0, 1.5, len(hh)).round(3).tolist())
    prices = rng.normal(80, 200, len(hh)).round(2)
    prices[::97] = 2500.0  # spikes over the retail cap
    keep = [k for k in range(len(hh)) if k != 1250]  # one missing price (11 October)
    add_prices(store, hh.gather(keep), prices[keep].tolist())
    for shadow in (False, True):
        a = _both_paths(store, chosen, shadow)
        holds = {r[0]: r[3] for r in a if r[3] is not None}
        assert holds.get("C4") == "missing 48 import (E1) read(s)"
        assert (holds.get("C0") or "").startswith("missing spot price for 1 interval(s)")
        assert any(r[0] == "C3" and r[6] == 10 for r in a)  # estimates flagged
        assert any(r[0] == "C1" and r[3] is None for r in a)
    # the cap and floor bind: the dynamic bill of C3 differs from the uncapped product's
    uncapped = bill_accounts(store, OCT, NOV, ["C3"], {"dyn-passthrough":
                             load_products(PRODUCTS)["dyn-passthrough"]}, shadow=True)  # fmt: skip
    capped = bill_accounts(
        store, OCT, NOV, ["C3"], {"dyn-capped": chosen["dyn-capped"]}, shadow=True
    )
    assert uncapped.held == capped.held == 0
    assert uncapped.total_inc_gst != capped.total_inc_gst


def test_feed_in_floor_raised_mid_period_splits_the_line_on_both_paths(store: Store) -> None:
    """A feed-in floor (7 c) that starts on 16 October while the rate (5 c) stands: worked by
    hand, 1-15 October (6 October is the 23-hour DST day) 15 x 48 - 2 = 718 half-hours x 1.0
    kWh x 0.05 = 35.90 credit; 16-31 October 16 x 48 = 768 kWh x 0.07 = 53.76 credit; each path
    writes both lines (the fast path once summed them at the 5 c rate: 1486 kWh x 0.05 = 74.30)."""
    text = (PRODUCTS / "sh-flat.toml").read_text().replace('id = "sh-flat"', 'id = "flat-floor"')
    rate = 'rate = [{ effective_from = 2024-07-01, value = "0.0500", source = "IPART'
    assert rate in text
    floor = (
        'floor = [{ effective_from = 2024-07-01, value = "0.0000", source = "test" }, '
        '{ effective_from = 2024-10-16, value = "0.0700", source = "test" }]\n'
    )
    at = text.index(rate)
    at = text.index("\n", at) + 1
    product = parse_product(text[:at] + floor + text[at:], "flat-floor")
    hh = half_hours(OCT, 31)
    add_customer(store, "F", [("flat-floor", date(2024, 7, 1), None)])
    add_reads(store, "NMIF", "E1", hh, [0.5] * len(hh))
    add_reads(store, "NMIF", "B1", hh, [1.0] * len(hh))
    (bill,) = _both_paths(store, {"flat-floor": product}, shadow=False)
    feed_in = sorted(x for x in bill[7] if x.startswith("Solar feed-in credit"))
    assert feed_in == [
        "Solar feed-in credit||-35.90|2024-10-01|2024-10-15",
        "Solar feed-in credit||-53.76|2024-10-16|2024-10-31",
    ]


def test_solar_site_without_export_reads_is_held_not_credited_zero(store: Store) -> None:
    """Missing reads never count as zero: a solar site (6.6 kW) whose October export file has
    not arrived is held on both paths (31 x 48 - 2 = 1486 half-hours missing), while a site
    without solar or a battery and no export channel is billed as usual; a product that pays
    no feed-in does not wait for export reads."""
    hh = half_hours(OCT, 31)
    add_customer(store, "S", [("sh-flat", date(2024, 7, 1), None)], solar_kw=6.6)
    add_customer(store, "N", [("sh-flat", date(2024, 7, 1), None)])
    for acct in ("S", "N"):
        add_reads(store, f"NMI{acct}", "E1", hh, [0.5] * len(hh))
    products = load_products(PRODUCTS)
    rows = _both_paths(store, {"sh-flat": products["sh-flat"]}, shadow=False)
    holds = {r[0]: r[3] for r in rows}
    assert holds == {"N": None, "S": "missing 1486 export (B1) read(s)"}
    flat = products["sh-flat"]
    no_feed_in = flat.model_copy(
        update={"components": [c for c in flat.components if c.type != "feed_in"]}
    )
    rows = _both_paths(store, {"sh-flat": no_feed_in}, shadow=False)
    assert {r[0]: r[3] for r in rows} == {"N": None, "S": None}


def test_a_day_with_missing_half_hours_is_held_alike_on_all_paths(store: Store) -> None:
    """Three half-hours of 10 October missing for G (its day array has three NULL slots), on
    both products of the random month's kinds, billed in the same pass as a complete account
    H: G is held for 3 missing reads on every path, H is billed. (The day-array pass cleans
    such arrays element by element: DuckDB's list_dot_product refuses a list vector holding a
    NULL anywhere in it.)"""
    hh = half_hours(OCT, 31)
    gap = set(range(9 * 48 + 20, 9 * 48 + 23))  # 10 October, three half-hours
    products = load_products(PRODUCTS)
    chosen = {k: products[k] for k in ("sh-tou", "dyn-passthrough")}
    add_prices(store, hh, [90.0] * len(hh))
    for acct, prod in (("G", "sh-tou"), ("H", "sh-tou"), ("GD", "dyn-passthrough"),
                       ("HD", "dyn-passthrough")):  # fmt: skip
        add_customer(store, acct, [(prod, date(2024, 7, 1), None)])
        keep = [k for k in range(len(hh)) if not (acct.startswith("G") and k in gap)]
        add_reads(store, f"NMI{acct}", "E1", hh.gather(keep), [0.4] * len(keep))
    rows = _both_paths(store, chosen, shadow=False)
    holds = {r[0]: r[3] for r in rows}
    assert holds == {
        "G": "missing 3 import (E1) read(s)",
        "GD": "missing 3 import (E1) read(s)",
        "H": None,
        "HD": None,
    }
    kwh = store.query(
        "SELECT list_count(kwh), len(kwh) FROM meter_days d JOIN meter_channels c"
        " USING (channel_id) WHERE c.nmi = 'NMIG' AND market_day = DATE '2024-10-10'"
    ).fetchall()
    assert kwh == [(45, 48)]


def test_estimated_intervals_count_each_interval_once_on_both_paths(store: Store) -> None:
    """Estimated reads on import at intervals 100-109 and on export at 105-114: 15 intervals
    have an estimate on some channel (105-109 on both count once); both paths say 15 (the fast
    path once reported the larger per-channel count, 10)."""
    hh = half_hours(OCT, 31)
    add_customer(store, "E", [("sh-flat", date(2024, 7, 1), None)], solar_kw=5.0)
    for suffix, lo in (("E1", 100), ("B1", 105)):
        est = list(range(lo, lo + 10))
        rest = [k for k in range(len(hh)) if k not in est]
        add_reads(store, "NMIE", suffix, hh.gather(rest), [0.4] * len(rest))
        add_reads(store, "NMIE", suffix, hh.gather(est), [0.4] * 10, quality="E")
    products = load_products(PRODUCTS)
    (bill,) = _both_paths(store, {"sh-flat": products["sh-flat"]}, shadow=False)
    assert bill[3] is None and bill[6] == 15


def test_a_whole_bill_change_inside_the_period_holds_the_bill(store: Store) -> None:
    """The tax rate changes on 16 October: lines are not split there, so the October bill is
    held with the reason rather than taxed at one rate for the month (it would have been
    10 % on every day); a change on 1 November, the cycle boundary, bills as usual."""
    flat = load_products(PRODUCTS)["sh-flat"]
    first = flat.tax_rate[0]
    add_customer(store, "T", [("sh-flat", date(2024, 7, 1), None)])
    add_reads(store, "NMIT", "E1", half_hours(OCT, 31), [0.5] * (31 * 48 - 2))
    for day, held in ((date(2024, 10, 16), True), (NOV, False)):
        change = first.model_copy(update={"effective_from": day, "value": first.value * 2})
        product = flat.model_copy(update={"tax_rate": [first, change]})
        (bill,) = _both_paths(store, {"sh-flat": product}, shadow=False)
        reason = f"product sh-flat: tax_rate changes on {day}, inside the billing period"
        assert (bill[3] or "").startswith(reason) if held else bill[3] is None


def test_a_site_whose_time_zone_was_corrected_is_not_billed_from_its_old_accruals(
    store: Store,
) -> None:
    """Broken Hill is in NSW1 on Adelaide time. A site first entered as Sydney and corrected to
    Broken Hill keeps its market days' accruals (a time zone change revises no day), whose
    pieces have the same lengths but start 30 minutes early: the bill is priced by the pass,
    on Broken Hill's days, as if never accrued."""
    from settlement.wholesale import revised_days

    products = {"sh-tou": load_products(PRODUCTS)["sh-tou"]}
    _october_accrued(store, "B", products)
    with covered_spy() as covered:
        bill_accounts(store, OCT, NOV, None, products)
        assert covered == [1]  # accrued as a Sydney site
        covered.clear()
        add_customer(store, "B", [("sh-tou", date(2024, 7, 1), None)], tz="Australia/Broken_Hill")
        assert revised_days(store) == []  # what the nightly's settle stage would find
        accrued = bill_accounts(store, OCT, NOV, None, products)
    assert covered == []
    passed = bill_accounts(store, OCT, NOV, None, products, engine="pass")
    got = store.con.execute(BILLS_SQL, [accrued.run_id]).fetchall()
    assert got == store.con.execute(BILLS_SQL, [passed.run_id]).fetchall()
    assert got[0][3] is None  # billed, not held


def test_a_segment_with_a_day_accrued_on_another_product_is_billed_by_the_pass(
    store: Store,
) -> None:
    """October accrued on sh-tou; the account then moves to sh-flat (enrolments replaced) and
    only 10 October is settled again, on sh-flat. The cover reads only the billed product's
    pieces: sh-flat's one day falls 30 days short of the segment's span, so the bill is priced
    by the pass, as if never accrued; back on sh-tou the other 30 days fall short by one."""
    products = load_products(PRODUCTS)
    tou = {"sh-tou": products["sh-tou"]}
    flat = {"sh-flat": products["sh-flat"]}
    _october_accrued(store, "P", tou)
    with covered_spy() as covered:
        bill_accounts(store, OCT, NOV, None, tou)
        assert covered == [1]
        covered.clear()
        add_customer(store, "P", [("sh-flat", date(2024, 7, 1), None)])
        settle_day(store, date(2024, 10, 10), "t", flat)
        on_flat = bill_accounts(store, OCT, NOV, None, flat)
        assert covered == []
        passed = bill_accounts(store, OCT, NOV, None, flat, engine="pass")
        got = store.con.execute(BILLS_SQL, [on_flat.run_id]).fetchall()
        assert got == store.con.execute(BILLS_SQL, [passed.run_id]).fetchall()
        assert got[0][3] is None  # billed, not held
        add_customer(store, "P", [("sh-tou", date(2024, 7, 1), None)])
        bill_accounts(store, OCT, NOV, None, tou)
        assert covered == []


def test_a_month_near_a_rounding_boundary_is_billed_alike_from_its_accruals(store: Store) -> None:
    """dyn-passthrough, October in Sydney (1486 half-hours), 1.0 kWh each at 100 $/MWh, DLF
    1.02918842205: the month's energy is 1486 x (0.1 x DLF + 0.0766) = 266.764999517, which the
    money rule rounds to 266.77 (to 1e-6 first: 266.765000). The 56 daily pieces rounded to
    1e-9 each, as the accruals were first stored, added up to 266.764999496 and 266.76; stored
    as the pass's float sums they give the pass's cent (found by review)."""
    products = load_products(PRODUCTS)
    add_customer(store, "R", [("dyn-passthrough", date(2024, 1, 1), None)], dlf=1.02918842205)
    hh = half_hours(date(2024, 9, 30), 33)
    add_reads(store, "NMIR", "E1", hh, [1.0] * len(hh))
    add_prices(store, hh, [100.0] * len(hh))
    (bill,) = _both_paths(store, {"dyn-passthrough": products["dyn-passthrough"]}, shadow=False)
    assert any(line.startswith("Energy (dynamic)|spot-linked|266.77|") for line in bill[7])


def test_a_product_on_its_own_clock_is_billed_by_the_pass(store: Store) -> None:
    """sh-flat on Brisbane's clock for a Sydney site, its energy rate rising on 16 October: the
    Sydney hour 16 October 00:00-01:00 is Brisbane's 15 October, so the old rate's line ends on
    15 October. The accruals are kept per Sydney day, which would have ended it on the 16th
    (found by review): such a product's bills are priced by the pass."""
    text = (PRODUCTS / "sh-flat.toml").read_text().replace('id = "sh-flat"', 'id = "bne-flat"')
    text = text.replace('region = "NSW1"', 'region = "NSW1"\ntimezone = "Australia/Brisbane"')
    rate = 'rate = [{ effective_from = 2024-07-01, value = "0.3050", source = "AER DMO'
    at = text.index(rate)
    end = text.index("\n", at)
    text = (
        text[:at]
        + 'rate = [{ effective_from = 2024-07-01, value = "0.3050", source = "old" }, '
        + '{ effective_from = 2024-10-16, value = "0.3300", source = "new" }]'
        + text[end:]
    )
    product = parse_product(text, "bne-flat")
    add_customer(store, "Z", [("bne-flat", date(2024, 1, 1), None)])
    add_reads(store, "NMIZ", "E1", half_hours(date(2024, 9, 30), 33), [1.0] * (33 * 48 - 2))
    (bill,) = _both_paths(store, {"bne-flat": product}, shadow=False, from_accruals=False)
    assert any(line.startswith("Energy||") and line.endswith("|2024-10-01|2024-10-15")
               for line in bill[7])  # fmt: skip
