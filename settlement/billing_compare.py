"""Shadow bills: every chosen product for the same accounts and days, winners and losers.

:func:`compare_products` runs a shadow bill run and reports, per account, each product's bill
total (incl. tax) and its difference from the account's baseline (its enrolled product on the
first day billed, unless ``baseline`` names one); per cohort (baseline product x solar x battery x
EV x concession x VPP) the number of accounts, mean difference and how many win (pay less) or
lose (pay more). Accounts with any held shadow bill are reported with a null total and left out
of the cohort means.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import polars as pl

from settlement.billing import Progress, bill_accounts
from settlement.store import Store
from tariffs.product import Product

_ACCOUNT_SQL = """
WITH t AS (
    SELECT account, product, min(period_start) AS first_day,
           CASE WHEN bool_or(status = 'held') THEN NULL ELSE sum(total_inc_gst) END AS total
    FROM bills WHERE run_id = ? GROUP BY account, product
), base AS (
    SELECT t.account, coalesce(?::VARCHAR, any_value(e.product)) AS baseline
    FROM t LEFT JOIN enrolments e ON e.account = t.account AND e.effective_from <= t.first_day
         AND (e.effective_to IS NULL OR e.effective_to > t.first_day)
    GROUP BY t.account
)
SELECT t.account, t.product, t.total::DOUBLE AS total_inc_tax, b.baseline,
       (t.total - bt.total)::DOUBLE AS diff_vs_baseline,
       c.solar_kw > 0 AS solar, c.battery_kwh > 0 AS battery, c.ev, c.concession,
       c.vpp_contract IS NOT NULL AS vpp
FROM t JOIN base b USING (account)
LEFT JOIN t bt ON bt.account = t.account AND bt.product = b.baseline
JOIN customers c ON c.account = t.account
ORDER BY t.account, t.product
"""


@dataclass
class Comparison:
    """Per-account and per-cohort shadow-bill differences of one shadow run."""

    run_id: int
    accounts: pl.DataFrame
    cohorts: pl.DataFrame


def compare_products(
    store: Store,
    period_start: date,
    period_end: date,
    products: dict[str, Product],
    accounts: Sequence[str] | None = None,
    *,
    baseline: str | None = None,
    progress: Progress | None = None,
) -> Comparison:
    """Shadow-bill ``accounts`` on every product in ``products`` and compare (see module doc)."""
    res = bill_accounts(
        store, period_start, period_end, accounts, products, shadow=True, progress=progress
    )
    per_account = store.con.sql(_ACCOUNT_SQL, params=[res.run_id, baseline]).pl()
    cohort_cols = ["baseline", "solar", "battery", "ev", "concession", "vpp"]
    cohorts = (
        per_account.filter(pl.col("diff_vs_baseline").is_not_null())
        .group_by([*cohort_cols, "product"])
        .agg(
            pl.len().alias("accounts"),
            pl.col("diff_vs_baseline").mean().alias("mean_diff"),
            pl.col("diff_vs_baseline").min().alias("best_diff"),
            pl.col("diff_vs_baseline").max().alias("worst_diff"),
            (pl.col("diff_vs_baseline") < -0.005).sum().alias("winners"),
            (pl.col("diff_vs_baseline") > 0.005).sum().alias("losers"),
        )
        .sort([*cohort_cols, "product"])
    )
    return Comparison(res.run_id, per_account, cohorts)
