"""The bill run's fast path: energy and feed-in lines aggregated inside DuckDB.

For products whose per-interval components all have an SQL form (:func:`tariffs.sql.sql_capable`),
reads never leave DuckDB: each component is one aggregate query (see :mod:`tariffs.sql`) over
the reads joined to a small local-clock table and the interval prices. Day-based lines (supply,
concession, minimum, discount) and rounding come from the same code as the reference path
(:mod:`tariffs.calculus`, :mod:`tariffs.lines`); tests hold both paths to the same cents.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from settlement.billing_io import (
    _NO_PRICES,
    COUNTS_SQL,
    _price_table,
    _read_holds,
    _utc_bounds,
    batch_reads,
)
from settlement.store import Store
from tariffs.calculus import LINE_COLUMNS, Context, _note_expr, component_lines
from tariffs.calendar import with_local_attributes
from tariffs.lines import SegmentBills, finish_lines
from tariffs.product import Energy, FeedIn
from tariffs.sql import DAY_CODES, component_query


def clock_frame(ctx: Context, bounds: pl.DataFrame) -> pl.DataFrame:
    """Every 5-minute instant of the run with its local date, minute, month and day code."""
    lo, hi = bounds["utc_from"].min(), bounds["utc_to"].max()
    assert isinstance(lo, datetime) and isinstance(hi, datetime)
    ts = pl.datetime_range(lo, hi, "5m", closed="left", eager=True, time_zone="UTC")
    local = with_local_attributes(pl.LazyFrame({"interval_start": ts}), ctx.timezone, ctx.holidays)
    return local.select(
        pl.col("interval_start").dt.epoch("us").alias("ts_us"),
        "local_date",
        "minute_of_day",
        "month",
        pl.col("day_type")
        .cast(pl.Utf8)
        .replace_strict(DAY_CODES, return_dtype=pl.Int8)
        .alias("day_code"),
    ).collect()


def _lines(
    ctx: Context, store: Store, order: int, comp: Energy | FeedIn, reads: str
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    q = component_query(comp, reads)
    rows = store.con.sql(q.sql).pl()
    labels = dict(enumerate(q.labels))
    holds = (
        rows.filter(pl.col("n_unpriced") > 0)
        .group_by("seg")
        .agg(
            pl.format("missing spot price for {} interval(s)", pl.col("n_unpriced").sum()).alias(
                "reason"
            )
        )
    )
    amount = (
        pl.col("amount_raw") * q.sign if q.varying else pl.col("rate") * pl.col("quantity") * q.sign
    )
    rate = (
        pl.when(pl.col("quantity") != 0).then(pl.col("amount") / pl.col("quantity") * q.sign)
        if q.varying
        else pl.col("rate")
    )
    lines = (
        rows.with_columns(amount.alias("amount"))
        .with_columns(
            rate.alias("rate"),
            pl.lit(order, pl.Int32).alias("order"),
            pl.lit(comp.name).alias("component"),
            pl.col("didx").replace_strict(labels, return_dtype=pl.Utf8).alias("detail"),
            pl.lit("kWh").alias("unit"),
            pl.lit(q.taxable).alias("taxable"),
            pl.col("quantity").cast(pl.Float64),
            pl.col("n_intervals").cast(pl.Int64),
        )
        .with_columns(_note_expr(comp))
        .select(LINE_COLUMNS)
    )
    counts = rows.group_by("seg").agg(
        pl.col("n_intervals").sum().alias("n"),
        pl.col("covered_minutes").sum().alias("covered"),
        pl.col("n_estimated").sum().alias("n_estimated"),
        pl.col("minutes").min().alias("minutes"),
        pl.lit(q.suffix).alias("suffix"),
    )
    return lines, holds, counts


def _counts_from(per_component: pl.DataFrame) -> pl.DataFrame:
    """Reads per segment and channel from the component queries (no extra scan of the reads).

    Counted in intervals of the segment's finest import length: covered minutes divided by it,
    so a month of 30-minute reads with a 5-minute day (a meter exchange) is complete.
    """
    wide = per_component.group_by("seg").agg(
        pl.col("minutes").filter(pl.col("suffix") == "E1").min().alias("minutes"),
        *[
            pl.col("covered").filter(pl.col("suffix") == sfx).max().alias(name)
            for sfx, name in (("E1", "n_import"), ("E2", "n_cl"), ("B1", "n_export"))
        ],
        pl.col("n_estimated").max().alias("estimated_intervals"),
    )
    return wide.with_columns(
        (pl.col(c) // pl.col("minutes")).alias(c) for c in ("n_import", "n_cl", "n_export")
    ).with_columns(pl.col("n_cl", "n_export").fill_null(0))


def bill_segments_sql(store: Store, ctx: Context, segs: pl.DataFrame) -> SegmentBills:
    """Price ``segs`` (one product, one clock) with the SQL fast path."""
    bounds = _utc_bounds(store, segs)
    prices = _price_table(store, bounds, None) if ctx.product.needs_spot else _NO_PRICES
    # small inputs copied into temp tables: DuckDB plans and scans them better than Arrow views
    frames = {"_segs": bounds, "_prices": prices, "_clock": clock_frame(ctx, bounds)}
    for name, frame in frames.items():
        store.con.register("_src", frame.to_arrow())
        store.con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM _src")
        store.con.unregister("_src")
    try:
        with batch_reads(store) as reads:
            parts = [
                _lines(ctx, store, i, c, reads)
                for i, c in enumerate(ctx.product.components)
                if isinstance(c, Energy | FeedIn)
            ]
            if any(p[2]["suffix"].eq("E1").any() for p in parts):
                counts = _counts_from(pl.concat([p[2] for p in parts]))
            else:
                counts = store.con.sql(COUNTS_SQL.format(source=reads)).pl()
    finally:
        for name in frames:
            store.con.execute(f"DROP TABLE IF EXISTS {name}")
    segments = segs.select("seg", "start", "end", "cycle_days", "concession")
    daily = component_lines(ctx, pl.LazyFrame(), segments, daily_only=True)
    lines = pl.concat([daily, *[p[0] for p in parts]], how="vertical_relaxed")
    holds = pl.concat([_read_holds(counts, bounds), *[p[1] for p in parts]], how="vertical_relaxed")
    est = counts.select("seg", pl.col("estimated_intervals").cast(pl.Int64)).filter(
        pl.col("estimated_intervals") > 0
    )
    return SegmentBills(lines=finish_lines(ctx, lines, segments), holds=holds, estimated=est)
