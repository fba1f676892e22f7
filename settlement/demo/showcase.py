"""The rest of ``make demo`` after the data is in: nightly runs with a revision, shadow bills,
and the safe-harbour price from the risk engine.

Timeline (the demo year starts on ``start``, 1 July by default):

1. nightly over the second month (settle every day, close every billing cycle that ends in it:
   cycles that started in the first month have complete data);
2. a revised NEM12 file arrives for ten accounts' import on the 5th of that month, after their
   bills were issued (re-read 10% higher, later UpdateDateTime);
3. nightly over the third month: the revision is ingested, the day re-settled, the issued bills
   re-billed and the difference put on each account's next bill as linked credit/rebill lines;
4. shadow bills: every account's second-month cycle on every product (who wins, who loses);
5. the risk engine prices the safe-harbour product from the store.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from settlement.billing import load_products
from settlement.billing_compare import compare_products
from settlement.config import NightlyConfig
from settlement.nem12_writer import write_nem12
from settlement.nightly import NightlyResult, run_nightly
from settlement.store import Store

REPO = Path(__file__).resolve().parents[2]


@dataclass
class ShowcaseSummary:
    """What the showcase did, for the demo's report."""

    nightly: list[dict[str, Any]] = field(default_factory=list)
    revision_file: str | None = None
    adjustments: list[dict[str, Any]] = field(default_factory=list)
    bills: dict[str, Any] = field(default_factory=dict)
    cohorts: list[dict[str, Any]] = field(default_factory=list)
    safe_harbour: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def month_start(day: dt.date, months_after: int) -> dt.date:
    """The first day of the month ``months_after`` months after ``day``'s month."""
    m = day.month - 1 + months_after
    return dt.date(day.year + m // 12, m % 12 + 1, 1)


def _nightly(store: Store, cfg: NightlyConfig, d1: dt.date, d2: dt.date) -> dict[str, Any]:
    result: NightlyResult = run_nightly(store, cfg, d1, d2)
    stages = result.manifest.get("stages", {})
    bill, issue = stages.get("bill", {}), stages.get("issue", {})
    accrued = store.con.execute(
        "SELECT count(*), coalesce(sum(amount), 0)::DOUBLE FROM (SELECT account, local_date, "
        "sum(amount) AS amount FROM daily_charges WHERE local_date BETWEEN ? AND ? GROUP BY ALL)",
        [d1, d2],
    ).fetchall()[0]
    return {
        "accrued_account_days": int(accrued[0]), "accrued_ex_tax": float(accrued[1]),
        "range": f"{d1} .. {d2}", "run_id": result.run_id, "status": result.status,
        "exit_code": int(result.exit_code), "message": result.message,
        "bills_issued": issue.get("bills_issued", 0), "bills_held": bill.get("bills_held", 0),
        "adjustments": bill.get("adjustments", 0),
        "final_adjustment_bills": bill.get("final_adjustment_bills", 0),
        "snapshot": result.snapshot,
        "manifest": str(Path(result.snapshot) / "manifest.json") if result.snapshot else None,
    }  # fmt: skip


REVISE_SQL = """
SELECT m.nmi, m.suffix, m.interval_start, m.interval_minutes, round(m.kwh * 1.1, 3) AS kwh,
       'A' AS quality
FROM meter_reads m JOIN (
    SELECT c.nmi FROM customers c JOIN bills b ON b.account = c.account AND b.status = 'issued'
    WHERE c.billing_cycle = 'monthly' AND c.cycle_day > $day AND b.period_start <= $d
      AND b.period_end > $d
    GROUP BY c.nmi ORDER BY c.nmi LIMIT 10
) t USING (nmi)
WHERE m.suffix = 'E1' AND m.interval_start >= timezone('Etc/GMT-10', $d::TIMESTAMP)
  AND m.interval_start < timezone('Etc/GMT-10', ($d + 1)::TIMESTAMP)
ORDER BY m.nmi, m.interval_start
"""


def write_revision(store: Store, inbox_meter: Path, day: dt.date) -> Path | None:
    """A NEM12 file re-reading ``day``'s import of ten billed accounts 10% higher."""
    reads = store.con.execute(REVISE_SQL, {"d": day, "day": day.day}).pl()
    if reads.height == 0:
        return None
    reads = reads.with_columns(update_datetime=pl.lit(dt.datetime.combine(day, dt.time(0)))
                               + pl.duration(days=40))  # fmt: skip
    path = inbox_meter / f"NEM12#DEMO-REVISION-{day:%Y%m%d}#DEMOMDP#FAIRSHARE.csv"
    write_nem12(reads, path, participant_from="DEMOMDP")
    return path


def run_showcase(
    out_dir: Path, db_path: Path, start: dt.date, days: int, *, risk: bool = True,
    risk_paths: int | None = None,
) -> ShowcaseSummary:  # fmt: skip
    """Run steps 1-5 of the module docstring against the demo store."""
    summary = ShowcaseSummary()
    m1, m2, m3 = (month_start(start, k) for k in (1, 2, 3))
    cfg = NightlyConfig(inbox=out_dir / "inbox", archive=out_dir / "archive",
                        runs=out_dir / "runs", products=REPO / "data" / "products")  # fmt: skip
    with Store.open(db_path) as store:
        if start + dt.timedelta(days=days) < m3 + dt.timedelta(days=31):
            summary.notes.append(
                f"nightly skipped: the demo covers {days} days; it needs data to {m3:%B %Y}"
            )
        else:
            summary.nightly.append(_nightly(store, cfg, m1, m2 - dt.timedelta(days=1)))
            rev = write_revision(store, cfg.inbox / "meter", m1 + dt.timedelta(days=4))
            summary.revision_file = str(rev) if rev else None
            summary.nightly.append(_nightly(store, cfg, m2, m3 - dt.timedelta(days=1)))
            summary.adjustments = (
                store.con.execute(
                    "SELECT original_bill_id, applied_to_bill_id, status, credit_ex_gst + rebill_ex_gst "
                    "AS net_ex_gst FROM bill_adjustments ORDER BY original_bill_id"
                )
                .pl()
                .to_dicts()
            )
            summary.bills = (
                store.con.execute(
                    "SELECT count(*) AS issued, sum(total_inc_gst)::DOUBLE AS total_inc_gst, "
                    "count(DISTINCT account) AS accounts FROM bills WHERE status = 'issued'"
                )
                .pl()
                .to_dicts()[0]
            )
            products = load_products(cfg.products)
            chosen = {k: v for k, v in products.items() if v.currency == "AUD"}
            cmp = compare_products(store, m1, m2, chosen)
            summary.cohorts = (
                cmp.cohorts.group_by("baseline", "product")
                .agg(pl.sum("accounts"), (pl.col("mean_diff") * pl.col("accounts")).sum()
                     .truediv(pl.sum("accounts")).alias("mean_diff"),
                     pl.sum("winners"), pl.sum("losers"))
                .sort("baseline", "product").to_dicts()
            )  # fmt: skip
        if risk:
            from settlement.risk_inputs import price_demo_safe_harbour

            book = REPO / "data" / "hedges" / "demo-hedge-book.toml"
            summary.safe_harbour = price_demo_safe_harbour(
                store, hedge_book_path=book if book.exists() else None, n_paths=risk_paths
            )
    return summary
