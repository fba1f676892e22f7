"""Store side of billing: billing segments, interval and price fetches, and writing bills.

SQL here is fixed text with ``?`` parameters and registered frames; nothing from a product file or
argument is pasted into SQL.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from typing import TYPE_CHECKING

import polars as pl

from settlement.store import Store
from tariffs.errors import ConfigError
from tariffs.lines import SegmentBills
from tariffs.product import Product

if TYPE_CHECKING:
    from settlement.billing import BillRunResult

# Billing cycles of the customers (``{accounts}``) that start in the period. No bound parameters:
# DuckDB 1.5 ran the parameterised form of this 10x slower (2.3 s for 100,000 customers); the
# months and the period come in as a registered frame (``_months``: m, lo, hi).
_CYCLES_SQL = """
WITH c AS (SELECT * FROM customers {accounts}),
cycles AS (
    SELECT c.*, make_date(year(m), month(m), c.cycle_day) AS cycle_start,
           (make_date(year(m), month(m), c.cycle_day)
             + CASE WHEN c.billing_cycle = 'quarterly' THEN INTERVAL 3 MONTH
                    ELSE INTERVAL 1 MONTH END)::DATE AS cycle_end, lo, hi
    FROM c, _months
    WHERE c.billing_cycle = 'monthly' OR (month(m) - 1) % 3 = 0
)
SELECT * EXCLUDE (lo, hi), greatest(cycle_start, move_in) AS s0,
       least(cycle_end, coalesce(move_out, cycle_end)) AS s1
FROM cycles WHERE cycle_start >= lo AND cycle_start < hi
"""

_SEGMENTS_SQL = """
SELECT y.account, y.nmi, y.region, y.timezone, y.dlf * y.mlf AS loss_factor, y.concession,
       y.cycle_start, y.cycle_end, (y.cycle_end - y.cycle_start)::INTEGER AS cycle_days,
       e.product, greatest(y.s0, e.effective_from) AS start,
       least(y.s1, coalesce(e.effective_to, y.s1)) AS "end",
       y.solar_kw > 0 AS solar, y.battery_kwh > 0 AS battery, y.ev,
       y.vpp_contract IS NOT NULL AS vpp
FROM _cycles y JOIN enrolments e ON e.account = y.account
WHERE least(y.s1, coalesce(e.effective_to, y.s1)) > greatest(y.s0, e.effective_from)
"""

_SHADOW_SQL = """
SELECT y.account, y.nmi, y.region, y.timezone, y.dlf * y.mlf AS loss_factor, y.concession,
       y.cycle_start, y.cycle_end, (y.cycle_end - y.cycle_start)::INTEGER AS cycle_days,
       p.product, y.s0 AS start, y.s1 AS "end",
       y.solar_kw > 0 AS solar, y.battery_kwh > 0 AS battery, y.ev,
       y.vpp_contract IS NOT NULL AS vpp
FROM _cycles y, _products p
WHERE y.s1 > y.s0
"""


def segments_frame(
    store: Store,
    period_start: date,
    period_end: date,
    accounts: Sequence[str] | None,
    products: dict[str, Product],
    *,
    shadow: bool,
) -> pl.DataFrame:
    """One row per (account, billing cycle, product) segment, numbered ``seg`` from 1."""
    first = date(period_start.year, period_start.month, 1)
    months = pl.date_range(
        pl.lit(first).dt.offset_by("-1mo"), pl.lit(period_end), "1mo", eager=True
    ).alias("m")
    store.con.register(
        "_months", months.to_frame().with_columns(lo=period_start, hi=period_end).to_arrow()
    )
    if accounts is not None:
        store.con.register(
            "_acc",
            pl.DataFrame({"account": list(accounts)}, schema={"account": pl.Utf8}).to_arrow(),
        )
    try:
        where = "WHERE account IN (SELECT account FROM _acc)" if accounts is not None else ""
        cycles = store.con.sql(_CYCLES_SQL.format(accounts=where)).pl()
    finally:
        store.con.unregister("_months")
        if accounts is not None:
            store.con.unregister("_acc")
    store.con.register("_cycles", cycles.to_arrow())
    try:
        if shadow:  # the products as a registered frame, not a parameter (see _CYCLES_SQL)
            store.con.register("_products", pl.DataFrame({"product": sorted(products)}).to_arrow())
            rel = store.con.sql(_SHADOW_SQL)
        else:
            rel = store.con.sql(_SEGMENTS_SQL)
        segs = rel.pl()
    finally:
        store.con.unregister("_cycles")
        if shadow:
            store.con.unregister("_products")
    unknown = sorted(set(segs["product"].unique().to_list()) - set(products))
    if unknown:
        raise ConfigError(f"accounts are enrolled on products with no product file: {unknown}")
    segs = segs.sort("account", "start", "product").with_row_index("seg", offset=1)
    return segs.with_columns(
        pl.col("seg").cast(pl.Int64),
        pl.col("cycle_days").cast(pl.Int32),
        pl.col("concession").cast(pl.Boolean),
    )


_READS_SQL = """
SELECT s.seg, epoch_us(e.interval_start) AS ts_us, e.interval_minutes::INTEGER AS interval_minutes,
       e.kwh AS import_kwh, coalesce(c.kwh, 0.0) AS controlled_kwh,
       coalesce(b.kwh, 0.0) AS export_kwh, s.loss_factor, p.spot_per_mwh,
       e.quality = 'E' OR coalesce(c.quality = 'E', false) OR coalesce(b.quality = 'E', false)
         AS estimated
FROM {segs} s
JOIN {source} e ON e.suffix = 'E1' AND e.quality <> 'N' AND e.nmi = s.nmi
     AND e.interval_start >= s.utc_from AND e.interval_start < s.utc_to
LEFT JOIN {source} c ON c.suffix = 'E2' AND c.quality <> 'N' AND c.nmi = e.nmi
     AND c.interval_start = e.interval_start
LEFT JOIN {source} b ON b.suffix = 'B1' AND b.quality <> 'N' AND b.nmi = e.nmi
     AND b.interval_start = e.interval_start
LEFT JOIN _prices p ON p.region = s.region AND p.ts_us = epoch_us(e.interval_start)
     AND p.interval_minutes = e.interval_minutes
"""
# _READS_SQL joins E2 and B1 to E1 on the interval start: right only when the reads share E1's
# length. A segment with reads of more than one length (a meter exchange, or export read every
# 5 minutes on a 30-minute import meter) is read by _MIXED_READS_SQL instead (``_mixed``: seg).
_SAME_LENGTH_SEGS = "(SELECT * FROM _segs WHERE seg NOT IN (SELECT seg FROM _mixed))"
# The same rows for segments whose reads differ in length, priced per read as the fast path
# prices them: an E2 or B1 read at an E1 read's start and length shares its row (as above); any
# other is a row of its own, at its own start, length and spot price, with import_kwh 0 and
# ``import_read`` false (import components skip it, tariffs.calculus). On such a segment a
# controlled-load or export column is null where the row has no read of that channel because the
# channel's reads there are rows of their own, and 0 where it has none at all (as above: a gap is
# held by the counts, a channel the meter lacks bills a zero line). ``estimated``: once per
# start with an estimated read on any channel (as the fast path counts intervals).
_MIXED_READS_SQL = """
WITH r AS (
    SELECT s.seg, s.region, s.loss_factor, m.suffix, m.interval_start,
           m.interval_minutes::INTEGER AS interval_minutes, m.kwh, m.quality = 'E' AS est
    FROM _segs s JOIN {source} m ON m.nmi = s.nmi AND m.suffix IN ('E1', 'E2', 'B1')
         AND m.quality <> 'N' AND m.interval_start >= s.utc_from AND m.interval_start < s.utc_to
    WHERE s.seg IN (SELECT seg FROM _mixed)
),
k AS (
    SELECT r.*, r.suffix = 'E1' OR e.seg IS NOT NULL AS shared
    FROM r LEFT JOIN r e ON r.suffix <> 'E1' AND e.suffix = 'E1' AND e.seg = r.seg
         AND e.interval_start = r.interval_start AND e.interval_minutes = r.interval_minutes
),
apart AS (
    SELECT seg, bool_or(suffix = 'E2' AND NOT shared) AS cl_apart,
           bool_or(suffix = 'B1' AND NOT shared) AS export_apart
    FROM k GROUP BY seg
),
rows AS (
    SELECT k.seg, k.suffix, k.region, k.loss_factor, k.interval_start, k.interval_minutes,
           CASE WHEN k.suffix = 'E1' THEN k.kwh ELSE 0.0 END AS import_kwh,
           CASE k.suffix WHEN 'E2' THEN k.kwh WHEN 'E1' THEN
             coalesce(c.kwh, CASE WHEN a.cl_apart THEN NULL ELSE 0.0 END) END AS controlled_kwh,
           CASE k.suffix WHEN 'B1' THEN k.kwh WHEN 'E1' THEN
             coalesce(b.kwh, CASE WHEN a.export_apart THEN NULL ELSE 0.0 END) END AS export_kwh,
           k.est OR coalesce(c.est, false) OR coalesce(b.est, false) AS est
    FROM k JOIN apart a USING (seg)
    LEFT JOIN k c ON k.suffix = 'E1' AND c.suffix = 'E2' AND c.shared AND c.seg = k.seg
         AND c.interval_start = k.interval_start
    LEFT JOIN k b ON k.suffix = 'E1' AND b.suffix = 'B1' AND b.shared AND b.seg = k.seg
         AND b.interval_start = k.interval_start
    WHERE k.suffix = 'E1' OR NOT k.shared
)
SELECT x.seg, epoch_us(x.interval_start) AS ts_us, x.interval_minutes, x.import_kwh,
       x.controlled_kwh, x.export_kwh, x.loss_factor, p.spot_per_mwh,
       bool_or(x.est) OVER (PARTITION BY x.seg, x.interval_start)
         AND row_number() OVER (PARTITION BY x.seg, x.interval_start ORDER BY x.suffix) = 1
         AS estimated,
       x.suffix = 'E1' AS import_read
FROM rows x
LEFT JOIN _prices p ON p.region = x.region AND p.ts_us = epoch_us(x.interval_start)
     AND p.interval_minutes = x.interval_minutes
"""
# The current reads of the batch's channels (``_segs``: nmi, utc_from, utc_to), as numbers. Put
# straight into the big joins, ``meter_reads_raw`` (a view over meter_values and its two
# dictionaries) is joined in whole before the segments restrict it (DuckDB does not reorder
# joins across the view), ~2.8 s per query for 5,000 accounts x a month of 5-minute data; taken
# once per batch, channel first, it costs ~2.5 s and each query over it ~0.2 s.
_BATCH_VALUES_SQL = """
CREATE OR REPLACE TEMP TABLE _batch_values AS
SELECT v.channel_id, v.interval_start, v.interval_minutes, v.kwh, v.flag_id
FROM (SELECT nmi, min(utc_from) AS lo, max(utc_to) AS hi FROM _segs GROUP BY nmi) s
JOIN meter_channels c ON c.nmi = s.nmi AND c.suffix IN ('E1', 'E2', 'B1')
JOIN meter_values v ON v.channel_id = c.channel_id AND v.is_current
     AND v.interval_start >= s.lo AND v.interval_start < s.hi
"""
BATCH_READS = (
    "(SELECT c.nmi, c.suffix, v.interval_start, v.interval_minutes, v.kwh, f.quality "
    "FROM _batch_values v JOIN meter_channels c USING (channel_id) "
    "JOIN meter_flags f USING (flag_id))"
)


@contextmanager
def batch_reads(store: Store) -> Iterator[str]:
    """Materialise the current reads of the registered ``_segs`` batch (channels E1, E2 and B1
    of its NMIs, over each NMI's UTC bounds) and yield a relation with the ``meter_reads_raw``
    columns over them, for the billing queries of that batch. No bound parameters: DuckDB 1.5
    plans prepared versions of such scans much slower."""
    store.con.execute(_BATCH_VALUES_SQL)
    try:
        yield BATCH_READS
    finally:
        store.con.execute("DROP TABLE IF EXISTS _batch_values")


# Low-cardinality aggregate (one row per segment): reads per channel, for the missing-read holds.
COUNTS_SQL = """
SELECT s.seg, min(m.interval_minutes) FILTER (WHERE m.suffix = 'E1') AS minutes,
       -- in intervals of the finest import length: covered minutes / that length
       sum(m.interval_minutes::BIGINT) FILTER (WHERE m.suffix = 'E1')
         // min(m.interval_minutes::BIGINT) FILTER (WHERE m.suffix = 'E1') AS n_import,
       sum(m.interval_minutes::BIGINT) FILTER (WHERE m.suffix = 'E2')
         // min(m.interval_minutes::BIGINT) FILTER (WHERE m.suffix = 'E1') AS n_cl,
       sum(m.interval_minutes::BIGINT) FILTER (WHERE m.suffix = 'B1')
         // min(m.interval_minutes::BIGINT) FILTER (WHERE m.suffix = 'E1') AS n_export,
       count(*) FILTER (WHERE m.quality = 'E') AS estimated_intervals,
       -- reads of more than one length (any channel): read with _MIXED_READS_SQL
       min(m.interval_minutes) <> max(m.interval_minutes) AS mixed_lengths
FROM _segs s JOIN {source} m ON m.nmi = s.nmi
     AND m.interval_start >= s.utc_from AND m.interval_start < s.utc_to
WHERE m.quality <> 'N' AND m.suffix IN ('E1', 'E2', 'B1')
GROUP BY s.seg
"""


def _read_channels(
    store: Store, src: str, as_of: datetime | None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """E1 reads with E2 and B1 joined in DuckDB (hash joins, no wide group-by), and counts.

    Segments whose reads differ in length come from _MIXED_READS_SQL, and the frame then has an
    ``import_read`` column (see there); without such segments it is _READS_SQL's frame alone.
    No bound parameters in the large query when ``as_of`` is None: DuckDB 1.5 plans a prepared
    version of this join ~30x slower.
    """
    params = [] if as_of is None else [as_of]
    counts = store.con.sql(COUNTS_SQL.format(source=src), params=params).pl()
    mixed = counts.filter(pl.col("mixed_lengths")).select("seg")
    if mixed.height == 0:
        frame = store.con.sql(_READS_SQL.format(source=src, segs="_segs"), params=params * 3).pl()
    else:
        store.con.register("_mixed", mixed.to_arrow())
        try:
            same = store.con.sql(
                _READS_SQL.format(source=src, segs=_SAME_LENGTH_SEGS), params=params * 3
            ).pl()
            apart = store.con.sql(_MIXED_READS_SQL.format(source=src), params=params).pl()
        finally:
            store.con.unregister("_mixed")
        frame = pl.concat(
            [same.with_columns(pl.lit(True).alias("import_read")), apart], how="vertical_relaxed"
        )
    iv = frame.with_columns(
        pl.from_epoch("ts_us", time_unit="us").dt.replace_time_zone("UTC").alias("interval_start")
    ).drop("ts_us")
    iv = iv.with_columns(pl.col("spot_per_mwh").cast(pl.Float64))
    return iv, counts


_PRICES_SQL = """
WITH p AS (SELECT * FROM {source} WHERE list_contains(?::VARCHAR[], region)
           AND interval_start >= ?::TIMESTAMPTZ - INTERVAL 1 DAY AND interval_start < ?::TIMESTAMPTZ)
SELECT region, time_bucket(to_minutes(?::INTEGER), interval_start) AS interval_start,
       sum(price_per_mwh * interval_minutes) / sum(interval_minutes) AS spot_per_mwh
FROM p WHERE interval_minutes <= ?::INTEGER
GROUP BY ALL HAVING sum(interval_minutes) = ?::INTEGER
UNION ALL
SELECT region, unnest(generate_series(interval_start,
         interval_start + to_minutes(interval_minutes - ?::INTEGER), to_minutes(?::INTEGER))),
       price_per_mwh
FROM p WHERE interval_minutes > ?::INTEGER
"""


def _utc_bounds(store: Store, segs: pl.DataFrame) -> pl.DataFrame:
    """Each segment's local-date bounds as UTC instants (``utc_from``, ``utc_to``).

    Converted once per distinct (time zone, date) in DuckDB (ICU), then joined back: a run's
    100,000 segments share a few dozen dates.
    """
    days = pl.concat([segs.select("timezone", pl.col(c).alias("day")) for c in ("start", "end")])
    store.con.register("_d", days.unique().to_arrow())
    try:
        utc = store.con.sql(
            "SELECT timezone, day, timezone(timezone, day::TIMESTAMP) AS utc FROM _d"
        ).pl()
    finally:
        store.con.unregister("_d")
    # a site with solar or a battery exports: its export channel is expected to have reads
    exports = (
        (pl.col("solar") | pl.col("battery")).fill_null(False)
        if {"solar", "battery"} <= set(segs.columns)
        else pl.lit(False)
    )
    out = segs.select(
        "seg", "nmi", "region", "timezone", "loss_factor", "start", "end", exports.alias("exports")
    )
    for col, name in (("start", "utc_from"), ("end", "utc_to")):
        out = out.join(
            utc.rename({"day": col, "utc": name}), on=["timezone", col], how="left",
            maintain_order="left",
        )  # fmt: skip
    return out.select("seg", "nmi", "region", "loss_factor", "utc_from", "utc_to", "exports")


def fetch_intervals(
    store: Store,
    segs: pl.DataFrame,
    needs_spot: bool,
    as_of: datetime | None = None,
    priced: frozenset[str] = frozenset({"E1", "E2", "B1"}),
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Interval frame for the calculus, and holds for missing reads (one row per reason).

    ``as_of=None`` reads the current views; a time reads ``meter_reads_as_of``/``prices_as_of``.
    Spot prices (when ``needs_spot``) are averaged to each meter interval and joined in DuckDB.
    ``priced``: the channels the product bills (:func:`tariffs.calculus.priced_suffixes`), the
    ones whose missing reads hold a bill.
    """
    bounds = _utc_bounds(store, segs)
    prices = _price_table(store, bounds, as_of) if needs_spot else _NO_PRICES
    store.con.register("_segs", bounds.to_arrow())
    store.con.register("_prices", prices.to_arrow())
    try:
        if as_of is None:
            with batch_reads(store) as reads_src:
                iv, counts = _read_channels(store, reads_src, as_of)
        else:
            iv, counts = _read_channels(store, "meter_reads_as_of(?::TIMESTAMPTZ)", as_of)
    finally:
        store.con.unregister("_segs")
        store.con.unregister("_prices")
    holds = _read_holds(counts, bounds, priced)
    return iv, holds


def _read_holds(counts: pl.DataFrame, bounds: pl.DataFrame, priced: frozenset[str]) -> pl.DataFrame:
    """Holds when a segment lacks reads of a channel its product bills: import always; export
    when the site exports (solar or battery, ``bounds.exports``) or has export reads in the
    segment at all; controlled load when it has such reads at all. A missing read never counts
    as zero: a solar site whose export reads have not arrived is held, not credited nothing."""
    span = (pl.col("utc_to") - pl.col("utc_from")).dt.total_minutes()
    j = bounds.select("seg", span.alias("span"), "exports").join(counts, on="seg", how="left")
    j = j.with_columns((pl.col("span") // pl.col("minutes")).alias("expected"))
    reasons = []
    names = (
        ("n_import", "E1", "import (E1)", pl.lit(True)),
        ("n_cl", "E2", "controlled load (E2)", pl.col("n_cl") > 0),
        ("n_export", "B1", "export (B1)", (pl.col("n_export") > 0) | pl.col("exports")),
    )
    j = j.with_columns(pl.col("n_import", "n_cl", "n_export").fill_null(0))
    for col, suffix, name, expected in names:
        if suffix not in priced:
            continue
        gap = pl.col("expected") - pl.col(col)
        cond = expected & (gap > 0)
        reasons.append(
            j.filter(cond).select(
                "seg", pl.format("missing {} {} read(s)", gap, pl.lit(name)).alias("reason")
            )
        )
    none = j.filter(pl.col("minutes").is_null()).select(
        "seg", pl.lit("no meter reads in the period").alias("reason")
    )
    return pl.concat([none, *reasons])


_NO_PRICES = pl.DataFrame(
    schema={
        "region": pl.Utf8,
        "ts_us": pl.Int64,
        "interval_minutes": pl.Int32,
        "spot_per_mwh": pl.Float64,
    }
)
METER_MINUTES = (5, 10, 15, 30)


def _price_table(store: Store, bounds: pl.DataFrame, as_of: datetime | None) -> pl.DataFrame:
    """Regional prices averaged to each usual meter interval length (small: regions x intervals)."""
    src = "prices" if as_of is None else "prices_as_of(?::TIMESTAMPTZ)"
    regions = bounds["region"].unique().to_list()
    lo, hi = bounds["utc_from"].min(), bounds["utc_to"].max()
    frames = []
    for m in METER_MINUTES:
        params = ([as_of] if as_of is not None else []) + [regions, lo, hi, m, m, m, m, m, m]
        frames.append(
            store.con.sql(_PRICES_SQL.format(source=src), params=params)
            .pl()
            .select(
                "region",
                pl.col("interval_start").dt.epoch("us").alias("ts_us"),
                pl.lit(m, pl.Int32).alias("interval_minutes"),
                "spot_per_mwh",
            )
        )
    return pl.concat(frames).unique(["region", "ts_us", "interval_minutes"], keep="first")


def _bill_frames(
    run_id: int,
    product: Product,
    group: pl.DataFrame,
    priced: SegmentBills | None,
    rate_hold: str | None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    if priced is None:
        holds = group.select("seg", pl.lit(rate_hold).alias("hold_reason"))
        lines = pl.DataFrame()
        est = pl.DataFrame(schema={"seg": pl.Int64, "estimated_intervals": pl.Int64})
    else:
        holds = priced.holds.group_by("seg").agg(
            pl.col("reason").sort().str.join("; ").alias("hold_reason")
        )
        lines = priced.lines.join(holds, on="seg", how="anti")
        est = priced.estimated
    bill_id = pl.format("{}/{}/{}/r{}", "account", "product", "start", pl.lit(run_id))
    bills = (
        group.join(holds, on="seg", how="left")
        .join(est, on="seg", how="left")
        .with_columns(
            bill_id.alias("bill_id"),
            pl.lit(product.version or "inline").alias("product_version"),
            pl.lit(product.currency).alias("currency"),
            pl.col("estimated_intervals").fill_null(0),
        )
    )
    if lines.height:
        tot = lines.group_by("seg").agg(
            pl.sum("amount_ex_tax_cents").alias("ex_cents"), pl.sum("tax_cents").alias("tax_cents")
        )
        bills = bills.join(tot, on="seg", how="left")
        lines = lines.join(bills.select("seg", "bill_id"), on="seg").with_columns(
            (pl.int_range(pl.len()).over("seg") + 1).alias("line_no")
        )
    else:
        bills = bills.with_columns(
            pl.lit(None, pl.Int64).alias("ex_cents"), pl.lit(None, pl.Int64).alias("tax_cents")
        )
    return bills, lines


def write_bills(
    store: Store,
    run_id: int,
    results: list[tuple[Product, pl.DataFrame, SegmentBills | None, str | None]],
    texts: dict[str, tuple[str, str]],
    *,
    shadow: bool,
    status: str,
    result: BillRunResult,
) -> None:
    """Insert bills, lines and product versions of a run (inside the caller's transaction).

    The bills and lines of every group go in with one insert each: groups of fewer rows than a
    DuckDB row group (122,880) are kept in memory and written to the WAL at commit, which then
    checkpoints them (three products' 100,000 bills and 300,000 lines: a 0.5 s commit), where
    one insert of them all writes its full row groups compressed to the file as it goes."""
    all_bills: list[pl.DataFrame] = []
    all_lines: list[pl.DataFrame] = []
    for product, group, priced, rate_hold in results:
        bills, lines = _bill_frames(run_id, product, group, priced, rate_hold)
        _record_product(store, product, texts, run_id)
        ok_status = "shadow" if shadow else status
        bills = bills.with_columns(
            pl.when(pl.col("hold_reason").is_not_null())
            .then(pl.lit("held"))
            .otherwise(pl.lit(ok_status))
            .alias("status"),
            pl.lit(shadow).alias("shadow"),
        )
        all_bills.append(bills)
        if lines.height:
            all_lines.append(lines)
        held = bills.filter(pl.col("status") == "held")
        result.held += held.height
        result.bills += bills.height - held.height
        result.holds += [
            (r["bill_id"], r["account"], r["hold_reason"])
            for r in held.head(200).iter_rows(named=True)
        ]
        cents = (
            bills.filter(pl.col("status") != "held")
            .select((pl.col("ex_cents") + pl.col("tax_cents")).sum())
            .item()
        )
        result.total_inc_gst[product.currency] = (
            result.total_inc_gst.get(product.currency, 0.0) + (cents or 0) / 100
        )
    if all_bills:
        _insert(
            store,
            pl.concat(all_bills, how="vertical_relaxed"),
            pl.concat(all_lines, how="vertical_relaxed") if all_lines else pl.DataFrame(),
            run_id,
        )
    if status == "draft" and not shadow:
        _hold_whole_cycles(store, run_id, result)
    _supersede(store, run_id, shadow)


# The drafts of a run that share their (account, cycle start) with a held bill of the run (a
# cycle cut by a product switch or a rate hold), with the reason: the held bills of the cycle.
_SIBLINGS_SQL = """
WITH held AS (
    SELECT account, cycle_start,
           string_agg(bill_id || ': ' || hold_reason, '; ' ORDER BY bill_id) AS why
    FROM bills WHERE run_id = ? AND status = 'held' GROUP BY ALL
)
SELECT b.bill_id, b.account, b.currency, b.total_inc_gst,
       'another segment of this billing cycle is held (' || h.why
         || '); a cycle is issued whole' AS reason
FROM bills b JOIN held h USING (account, cycle_start)
WHERE b.run_id = ? AND b.status = 'draft'
ORDER BY b.bill_id
"""


def _hold_whole_cycles(store: Store, run_id: int, result: BillRunResult) -> None:
    """Hold every draft of the run whose billing cycle has a held segment (inside the
    caller's transaction): held like it, lines and totals dropped, the reason naming it.

    Holds are decided per product segment, but the close issues an (account, cycle) once: a
    cycle issued in part would leave its held segment out of every later close (its cycle
    counts as issued) and never be billed. Held whole, the cycle is drafted again by the next
    run and issued whole once every segment can be."""
    rows = store.con.execute(_SIBLINGS_SQL, [run_id, run_id]).fetchall()
    if not rows:
        return
    ids = [r[0] for r in rows]
    store.con.execute("DELETE FROM bill_lines WHERE list_contains(?::VARCHAR[], bill_id)", [ids])
    store.con.register(
        "_sib", pl.DataFrame({"bill_id": ids, "reason": [r[4] for r in rows]}).to_arrow()
    )
    try:
        store.con.execute(
            "UPDATE bills SET status = 'held', hold_reason = s.reason, total_ex_gst = NULL, "
            "gst = NULL, total_inc_gst = NULL FROM _sib s WHERE bills.bill_id = s.bill_id"
        )
    finally:
        store.con.unregister("_sib")
    result.held += len(rows)
    result.bills -= len(rows)
    for bill_id, account, currency, total, reason in rows:
        left = result.total_inc_gst.get(currency, 0.0) - float(total)
        result.total_inc_gst[currency] = round(left, 2)
        if len(result.holds) < 200:
            result.holds.append((bill_id, account, reason))


def _insert(store: Store, bills: pl.DataFrame, lines: pl.DataFrame, run_id: int) -> None:
    cols = ["bill_id", "account", "nmi", "start", "end", "cycle_start", "cycle_end", "product", "product_version",
            "currency", "ex_cents", "tax_cents", "status", "hold_reason", "estimated_intervals", "shadow"]  # fmt: skip
    store.con.register("_b", bills.select(cols).to_arrow())
    try:
        store.con.execute(
            'INSERT INTO bills SELECT bill_id, ?, account, nmi, start, "end", cycle_start, cycle_end,'
            " product, product_version, currency, (ex_cents::DECIMAL(18,2) * 0.01)::DECIMAL(18,2),"
            " (tax_cents::DECIMAL(18,2) * 0.01)::DECIMAL(18,2),"
            " ((ex_cents + tax_cents)::DECIMAL(18,2) * 0.01)::DECIMAL(18,2), status, hold_reason,"
            " estimated_intervals, shadow, now(), 'cycle' FROM _b",
            [run_id],
        )
    finally:
        store.con.unregister("_b")
    if not lines.height:
        return
    lcols = ["bill_id", "line_no", "component", "detail", "quantity", "unit", "rate", "amount_ex_tax_cents",
             "tax_cents", "taxable", "date_from", "date_to", "n_intervals", "explanation"]  # fmt: skip
    store.con.register("_l", lines.select(lcols).to_arrow())
    try:
        store.con.execute(
            # quantities to 1e-6 and rates to 1e-8: parallel float sums differ in the last bits
            # from run to run; stored lines (and their audited hashes) must not
            "INSERT INTO bill_lines SELECT bill_id, line_no, component, detail, round(quantity, 6),"
            " unit, round(rate, 8), (amount_ex_tax_cents::DECIMAL(18,2) * 0.01)::DECIMAL(18,2),"
            " (tax_cents::DECIMAL(18,2) * 0.01)::DECIMAL(18,2),"
            " ((amount_ex_tax_cents + tax_cents)::DECIMAL(18,2) * 0.01)::DECIMAL(18,2), taxable,"
            " date_from, date_to, n_intervals, explanation FROM _l"
        )
    finally:
        store.con.unregister("_l")


def _record_product(
    store: Store, product: Product, texts: dict[str, tuple[str, str]], run_id: int
) -> None:
    path, text = texts.get(product.id, ("(in memory)", product.model_dump_json()))
    store.con.execute(
        "INSERT INTO product_versions VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        [product.id, product.version or "inline", product.kind, path, text, run_id],
    )


def _supersede(store: Store, run_id: int, shadow: bool) -> None:
    """Earlier drafts (or shadows) for the same account cycles become ``superseded``."""
    store.con.execute(
        "UPDATE bills SET status = 'superseded' WHERE run_id <> ? AND shadow = ? "
        "AND status IN ('draft', 'shadow', 'held') AND (account, cycle_start) IN "
        "(SELECT account, cycle_start FROM bills WHERE run_id = ?)",
        [run_id, shadow, run_id],
    )
