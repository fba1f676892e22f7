"""Explain a bill: every line with its arithmetic, drilled down to the intervals that made it.

Nothing per interval is stored with a bill. The drill-down recomputes the bill from the product
version recorded with its run (``product_versions.content``) and the reads and prices as known
when the run started (``meter_reads_as_of``/``prices_as_of`` at ``billing_runs.data_as_of``), and
says whether the recomputation reproduces the stored lines to the cent. Adjustment lines
(corrections of issued bills, ``settlement.closing``) are not recomputed from intervals: they are
checked against the ``bill_adjustments`` rows they carry, component by component. A final
adjustment bill (kind ``final_adjustment``) has only those.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl

from settlement.billing_io import fetch_intervals
from settlement.store import Store
from tariffs.calculus import Context, localise, priced_intervals, spot_parts_exprs
from tariffs.calendar import holiday_dates
from tariffs.errors import ConfigError
from tariffs.lines import bill_segments
from tariffs.product import Energy, FeedIn, Product, parse_product

_BILL_SQL = """
SELECT b.*, c.region, c.timezone, c.dlf * c.mlf AS loss_factor, c.concession,
       (b.cycle_end - b.cycle_start)::INTEGER AS cycle_days, r.data_as_of, v.content, v.source_path
FROM bills b JOIN billing_runs r USING (run_id)
JOIN product_versions v ON v.product = b.product AND v.product_version = b.product_version
JOIN customers c ON c.account = b.account
WHERE b.bill_id = ?
"""


# Per adjustment line component: the amounts of the adjustments a bill carries (applied to it;
# a draft's: its account's pending ones, which the nightly attaches to its first draft).
_ADJUSTED_SQL = """
WITH carried AS (
    SELECT * FROM bill_adjustments
    WHERE applied_to_bill_id = $bill
       OR ($draft AND account = $account AND status IN ('pending', 'pending_written_off'))
)
SELECT 'Adjustment: credit' AS component, sum(credit_ex_gst) AS ex, sum(credit_gst) AS tax,
       count(*) AS n FROM carried
UNION ALL SELECT 'Adjustment: rebill', sum(rebill_ex_gst), sum(rebill_gst), count(*) FROM carried
UNION ALL SELECT 'Adjustment: back-billing limit', sum(writeoff_ex_gst), sum(writeoff_gst),
       count(*) FROM carried WHERE status LIKE '%written_off'
"""
ADJUSTMENT_PREFIX = "Adjustment: "
# The drill-down's columns (spot-linked products add the spot price and its parts).
DRILL_SCHEMA: dict[str, pl.DataType] = {
    "interval_start": pl.Datetime("us", "UTC"),
    "interval_minutes": pl.Int64(),
    "local_date": pl.Date(),
    "component": pl.Utf8(),
    "detail": pl.Utf8(),
    "quantity": pl.Float64(),
    "rate": pl.Float64(),
    "amount": pl.Float64(),
}


def _adjustments_match(store: Store, bill: dict[str, Any], lines: pl.DataFrame) -> bool:
    """True when the bill's adjustment lines add up, per component, to the adjustments it
    carries (ex tax and tax, to the cent), and it has a line for each kind it carries. A draft
    without adjustment lines carries none (only the nightly's drafts take them)."""
    adj = lines.filter(pl.col("component").str.starts_with(ADJUSTMENT_PREFIX))
    if bill["status"] == "draft" and not adj.height:
        return True
    rows = store.con.execute(
        _ADJUSTED_SQL,
        {"bill": bill["bill_id"], "draft": bill["status"] == "draft", "account": bill["account"]},
    ).fetchall()
    for component, ex, tax, n in rows:
        mine = adj.filter(pl.col("component") == component)
        if mine.height != n:
            return False
        if n and (mine["amount_ex_gst"].sum() != ex or mine["gst"].sum() != tax):
            return False
    return adj.height == sum(int(r[3]) for r in rows)


@dataclass
class BillExplanation:
    """A stored bill, its lines, and the per-interval drill-down recomputed from its inputs."""

    bill: dict[str, Any]
    lines: pl.DataFrame
    intervals: (
        pl.DataFrame
    )  # seg, interval_start, local_date, component, detail, quantity, rate, amount
    reproduced: bool | None  # None when the bill is held (nothing to reproduce)


def _product(content: str, source: str) -> Product:
    if content.lstrip().startswith("{"):
        return Product.model_validate_json(content)
    return parse_product(content, source)


def explain_bill(store: Store, bill_id: str) -> BillExplanation:
    """Recompute ``bill_id`` and return its lines and interval drill-down."""
    rel = store.con.sql(_BILL_SQL, params=[bill_id])
    rows = rel.fetchall()
    if not rows:
        raise ConfigError(f"no bill {bill_id!r} (see: fairshare bill list)")
    bill = dict(zip(rel.columns, rows[0], strict=True))
    lines = store.con.sql(
        "SELECT * FROM bill_lines WHERE bill_id = ? ORDER BY line_no", params=[bill_id]
    ).pl()
    adjusted = _adjustments_match(store, bill, lines)
    if bill["kind"] == "final_adjustment":
        # its lines are corrections of other bills: no intervals of its own to recompute
        return BillExplanation(bill, lines, pl.DataFrame(schema=DRILL_SCHEMA), adjusted)
    product = _product(bill.pop("content"), bill["source_path"])
    seg = pl.DataFrame(
        {
            "seg": [1],
            "nmi": [bill["nmi"]],
            "region": [bill["region"]],
            "timezone": [bill["timezone"]],
            "loss_factor": [bill["loss_factor"]],
            "start": [bill["period_start"]],
            "end": [bill["period_end"]],
            "cycle_days": [bill["cycle_days"]],
            "concession": [bill["concession"]],
        },
        schema_overrides={"cycle_days": pl.Int32},
    )
    as_of: datetime = bill["data_as_of"]
    iv, _holds = fetch_intervals(store, seg, product.needs_spot, as_of)
    tz = product.timezone or bill["timezone"]
    years = sorted({bill["period_start"].year, bill["period_end"].year})
    ctx = Context(product, tz, tuple(holiday_dates(product.holidays, years)))
    drill = _drill(ctx, iv, seg)
    reproduced = None
    if bill["status"] != "held" and lines.height:
        again = bill_segments(
            ctx, iv, seg.select("seg", "start", "end", "cycle_days", "concession")
        ).lines
        stored = {
            (r["component"], r["detail"], r["date_from"]): round(float(r["amount_ex_gst"]) * 100)
            for r in lines.iter_rows(named=True)
            if float(r["amount_ex_gst"]) != 0 and not r["component"].startswith(ADJUSTMENT_PREFIX)
        }
        redo = {
            (r["component"], r["detail"], r["date_from"]): r["amount_ex_tax_cents"]
            for r in again.iter_rows(named=True)
            if r["amount_ex_tax_cents"] != 0
        }
        # zero lines may differ between the SQL and polars paths
        reproduced = stored == redo and adjusted
    return BillExplanation(bill, lines, drill, reproduced)


def _drill(ctx: Context, iv: pl.DataFrame, seg: pl.DataFrame) -> pl.DataFrame:
    local = localise(ctx, iv)
    priced = priced_intervals(ctx, local, seg).collect()
    signs = {c.name: -1.0 for c in ctx.product.components if isinstance(c, FeedIn)}
    out = priced.with_columns(
        (
            pl.col("quantity")
            * pl.col("rate")
            * pl.col("component").replace_strict(signs, default=1.0)
        ).alias("amount")
    ).select(
        "interval_start",
        "interval_minutes",
        "local_date",
        "component",
        "detail",
        "quantity",
        "rate",
        "amount",
    )
    spots = [
        c.spot
        for c in ctx.product.components
        if isinstance(c, Energy | FeedIn) and c.spot is not None
    ]
    if spots:
        # a read is its start and length: with channels of different lengths two rows can
        # share a start, each priced at its own length's spot price
        extra = local.select(
            "interval_start", "interval_minutes", pl.col("spot_per_mwh"),
            *spot_parts_exprs(spots[0]),
        ).unique(["interval_start", "interval_minutes"]).collect()  # fmt: skip
        out = out.join(extra, on=["interval_start", "interval_minutes"], how="left")
    return out.sort("component", "interval_start")
