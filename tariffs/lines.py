"""From component lines to a bill: minimum charge, discounts, rounding, tax, explanations, holds.

Money rule (same as :func:`tariffs.money.round_cents`, here vectorised in integer arithmetic): a
line's unrounded amount is rounded to 1e-9 (which removes floating-point noise, including the
last-bit differences of sums that DuckDB's threads add in a varying order), then to 1e-6 and then
once to whole cents, each half away from zero;
tax = cents x tax rate rounded the same way, on taxable lines only. Bill totals are sums of line
cents, so lines add up to the bill exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from tariffs.calculus import (
    CREDIT_NOTE,
    Context,
    component_lines,
    localise,
)
from tariffs.dated import dated_expr
from tariffs.product import Discount, MinimumCharge

OUTPUT_COLUMNS = [
    "seg", "order", "component", "detail", "quantity", "unit", "rate", "amount_ex_tax_cents",
    "tax_cents", "amount_inc_tax_cents", "taxable", "date_from", "date_to", "n_intervals",
    "explanation",
]  # fmt: skip

# A minimum-charge line's quantity x rate is the prorated minimum, its amount what tops the
# cycle's rounded taxable charges up to it.
MINIMUM_NOTE = "top-up: amount = quantity x rate (the prorated minimum) - the taxable charges"


@dataclass
class SegmentBills:
    """Lines of every priced segment, and why others are held."""

    lines: pl.DataFrame  # OUTPUT_COLUMNS
    holds: pl.DataFrame  # seg, reason
    estimated: pl.DataFrame  # seg, estimated_intervals


def nano_expr(amount: pl.Expr) -> pl.Expr:
    """Int64 billionths of ``amount`` [currency]: the float's noise-free value (see module doc)."""
    return (amount * 1_000_000_000).round(0).cast(pl.Int64)


def micro_expr(amount: pl.Expr) -> pl.Expr:
    """Int64 millionths of ``amount``: its billionths rounded half away from zero."""
    nano = nano_expr(amount)
    return nano.sign() * ((nano.abs() + 500) // 1_000)


def cents_expr(amount: pl.Expr) -> pl.Expr:
    """Int64 cents: ``amount`` [currency] to 1e-9, to 1e-6, to cents, half away from zero."""
    micro = micro_expr(amount)
    return micro.sign() * ((micro.abs() + 5_000) // 10_000)


def tax_cents_expr(cents: pl.Expr, ppm: pl.Expr) -> pl.Expr:
    """Int64 tax cents = cents x (ppm / 1e6) rounded half away from zero (exact integers)."""
    return cents.sign() * ((cents.abs() * ppm * 2 + 1_000_000) // 2_000_000)


def _discount_lines(comp: Discount, lines: pl.DataFrame, order: int) -> pl.DataFrame:
    target = lines.filter(pl.col("component").is_in(comp.applies_to))
    frac = dated_expr(comp.fraction, "date_from")
    return (
        target.group_by("seg")
        .agg(
            (-(pl.col("amount") * frac)).sum().alias("amount"),
            pl.col("amount").sum().alias("quantity"),
            pl.min("date_from"),
            pl.max("date_to"),
        )
        .with_columns(
            pl.lit(order, pl.Int32).alias("order"),
            pl.lit(comp.name).alias("component"),
            pl.lit(", ".join(comp.applies_to)).alias("detail"),
            pl.lit("currency").alias("unit"),
            pl.when(pl.col("quantity") != 0)
            .then(-pl.col("amount") / pl.col("quantity"))
            .otherwise(dated_expr(comp.fraction, "date_from"))
            .alias("rate"),
            pl.lit(True).alias("taxable"),
            pl.lit(0, pl.Int64).alias("n_intervals"),
            pl.lit(f"{comp.name}: fraction off {', '.join(comp.applies_to)}, {CREDIT_NOTE}").alias(
                "note"
            ),
        )
        .select(lines.columns)
    )


def _minimum_lines(
    comp: MinimumCharge, lines: pl.DataFrame, segments: pl.DataFrame, order: int
) -> pl.DataFrame:
    # in cents, as the bill adds them: the taxable lines each rounded (finish_lines), the minimum
    # rounded once; the top-up is the difference, so the rounded bill meets the minimum exactly
    # (a top-up of the unrounded sum carried the lines' rounding: 15.009 billed as 15.00 + 0.00
    # topped up by 14.99, a bill of 29.99 under a 30.00 minimum)
    taxable = (
        lines.filter(pl.col("taxable"))
        .group_by("seg")
        .agg(cents_expr(pl.col("amount")).sum().alias("_billed_cents"))
    )
    days = (pl.col("end") - pl.col("start")).dt.total_days()
    return (
        segments.join(taxable, on="seg", how="left")
        .with_columns(
            pl.col("_billed_cents").fill_null(0),
            (dated_expr(comp.rate, "start") * days / pl.col("cycle_days")).alias("_minimum"),
        )
        .with_columns(
            (cents_expr(pl.col("_minimum")) - pl.col("_billed_cents")).alias("_top_up_cents")
        )
        .filter(pl.col("_top_up_cents") > 0)
        .select(
            "seg",
            pl.lit(order, pl.Int32).alias("order"),
            pl.lit(comp.name).alias("component"),
            pl.format(
                "minimum {} for {} of {} days", pl.col("_minimum").round(2), days, "cycle_days"
            ).alias("detail"),
            days.cast(pl.Float64).alias("quantity"),
            pl.lit("day").alias("unit"),
            (dated_expr(comp.rate, "start") / pl.col("cycle_days")).alias("rate"),
            (pl.col("_top_up_cents") / 100).alias("amount"),
            pl.lit(True).alias("taxable"),
            pl.col("start").alias("date_from"),
            (pl.col("end") - pl.duration(days=1)).alias("date_to"),
            pl.lit(0, pl.Int64).alias("n_intervals"),
            pl.lit(MINIMUM_NOTE).alias("note"),
        )
    )


def finish_lines(ctx: Context, lines: pl.DataFrame, segments: pl.DataFrame) -> pl.DataFrame:
    """Add discount and minimum-charge lines, round to cents, add tax and explanations."""
    n = len(ctx.product.components)
    for order, comp in enumerate(ctx.product.components):
        if isinstance(comp, Discount):
            lines = pl.concat([lines, _discount_lines(comp, lines, order)])
    for order, comp in enumerate(ctx.product.components):
        if isinstance(comp, MinimumCharge):
            lines = pl.concat([lines, _minimum_lines(comp, lines, segments, order + n)])
    cur = ctx.product.currency
    ppm = (dated_expr(ctx.product.tax_rate, "date_from") * 1_000_000).round(0).cast(pl.Int64)
    out = lines.with_columns(
        cents_expr(pl.col("amount")).alias("amount_ex_tax_cents")
    ).with_columns(
        pl.when(pl.col("taxable"))
        .then(tax_cents_expr(pl.col("amount_ex_tax_cents"), ppm))
        .otherwise(0)
        .alias("tax_cents")
    )
    explanation = pl.format(
        "{} {} x {} {}/{} = {} {} ex {}; {}..{}; {} intervals; {}",
        pl.col("quantity").round(6),
        "unit",
        pl.col("rate").round(6).cast(pl.Utf8).fill_null("(no kWh)"),
        pl.lit(cur),
        "unit",
        (micro_expr(pl.col("amount")) / 1_000_000).round(6),
        pl.lit(cur),
        pl.lit(ctx.product.tax_name),
        "date_from",
        "date_to",
        "n_intervals",
        "note",
    )
    return (
        out.with_columns(
            (pl.col("amount_ex_tax_cents") + pl.col("tax_cents")).alias("amount_inc_tax_cents"),
            explanation.alias("explanation"),
        )
        .select(OUTPUT_COLUMNS)
        .sort("seg", "order", "detail", "date_from")
    )


def input_holds(ctx: Context, iv: pl.LazyFrame) -> pl.DataFrame:
    """Segments whose intervals lack a read or (for spot-linked products) a price."""
    checks = [pl.col("import_kwh").is_null().sum().alias("no_read")]
    if ctx.product.needs_spot:
        checks.append(pl.col("spot_per_mwh").is_null().sum().alias("no_price"))
    else:
        checks.append(pl.lit(0, pl.UInt32).alias("no_price"))
    agg = iv.group_by("seg").agg(*checks).collect()
    reads = agg.filter(pl.col("no_read") > 0).select(
        "seg", pl.format("missing import read for {} interval(s)", "no_read").alias("reason")
    )
    prices = agg.filter(pl.col("no_price") > 0).select(
        "seg", pl.format("missing spot price for {} interval(s)", "no_price").alias("reason")
    )
    return pl.concat([reads, prices])


def bill_segments(
    ctx: Context, intervals: pl.LazyFrame | pl.DataFrame, segments: pl.DataFrame
) -> SegmentBills:
    """Price ``segments`` on ``ctx.product`` from their ``intervals`` (see tariffs.calculus)."""
    iv = localise(ctx, intervals).collect().lazy()
    holds = input_holds(ctx, iv)
    held = holds.select("seg").unique()
    good_iv = iv.join(held.lazy(), on="seg", how="anti")
    good_seg = segments.join(held, on="seg", how="anti")
    lines = finish_lines(ctx, component_lines(ctx, good_iv, good_seg), good_seg)
    if "estimated" in intervals.collect_schema().names():
        est = (
            iv.filter(pl.col("estimated"))
            .group_by("seg")
            .agg(pl.len().cast(pl.Int64).alias("estimated_intervals"))
            .collect()
        )
    else:
        est = pl.DataFrame(schema={"seg": pl.Int64, "estimated_intervals": pl.Int64})
    return SegmentBills(lines=lines, holds=holds, estimated=est)
