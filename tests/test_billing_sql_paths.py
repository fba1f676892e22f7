"""The DuckDB fast path equals the polars reference on random data across a daylight-saving change
(Sydney, 6 October 2024) and a public holiday (Labour Day, 7 October), with negative prices."""

from __future__ import annotations

from datetime import date

import numpy as np
from test_billing_support import PRODUCTS, add_customer, add_prices, add_reads, half_hours

from settlement.billing import bill_accounts, load_products
from settlement.store import Store

OCT, NOV = date(2024, 10, 1), date(2024, 11, 1)


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
    q = (
        "SELECT b.account, b.product, b.hold_reason, b.total_ex_gst, b.gst, "
        "list_sort(list(l.component || '|' || l.detail || '|' || l.amount_ex_gst::VARCHAR) "
        "FILTER (WHERE l.amount_ex_gst <> 0)) FROM bills b LEFT JOIN bill_lines l USING (bill_id) "
        "WHERE b.run_id = ? GROUP BY ALL ORDER BY 1, 2"
    )
    for shadow in (False, True):
        ref = bill_accounts(store, OCT, NOV, None, chosen, shadow=shadow, engine="polars")
        fast = bill_accounts(store, OCT, NOV, None, chosen, shadow=shadow)
        a = store.con.execute(q, [ref.run_id]).fetchall()
        assert a == store.con.execute(q, [fast.run_id]).fetchall()
        assert all(r[2] is None for r in a) and len(a) == (12 if shadow else 4)
