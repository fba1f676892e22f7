"""The bill run's fast path: energy and feed-in lines aggregated inside DuckDB in one pass.

For products whose per-interval components all have an SQL form (:func:`tariffs.sql.sql_capable`),
reads never leave DuckDB. A small clock table (:func:`tariffs.sql.channel_pass`: per instant,
interval length, region and channel, the TOU keys, rates and spot price) is built once; the
current day arrays of the segments' channels (``meter_days``) are then summed by inner products
with the clock's masks (:mod:`settlement.billing_days`, the default), or, with
``FAIRSHARE_PASS=reads`` or sites in several time zones, their reads (``meter_values``) join it
on one integer key and are summed per segment and clock key (the per-read pass); a few hundred
thousand aggregate rows come back and polars
turns them into lines. Day-based lines
(supply, concession, minimum, discount) and rounding come from the same code as the reference
path (:mod:`tariffs.calculus`, :mod:`tariffs.lines`); tests hold both paths to the same cents.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from settlement.billing_days import array_pass
from settlement.billing_io import (
    _NO_PRICES,
    _price_table,
    _read_holds,
    _utc_bounds,
)
from settlement.store import Store, with_literals
from tariffs.calculus import LINE_COLUMNS, Context, _note_expr, component_lines, priced_suffixes
from tariffs.calendar import with_local_attributes
from tariffs.lines import SegmentBills, finish_lines
from tariffs.product import Energy, FeedIn
from tariffs.sql import (
    DAY_CODES,
    SUFFIX_CODE,
    ChannelPass,
    PassComponent,
    channel_pass,
    exact_sum,
    spot_amount_sql,
)


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


# The segments' channels (``_segs`` x ``meter_channels``), with their channel code and region index.
_SEG_CHANNELS_SQL = """
CREATE OR REPLACE TEMP TABLE _sc AS
SELECT s.seg, c.channel_id, CASE c.suffix {codes} END::UTINYINT AS sfx, s.utc_from, s.utc_to,
       s.loss_factor, r.region_idx
FROM _segs s JOIN meter_channels c ON c.nmi = s.nmi AND c.suffix IN ({suffixes})
JOIN _regions r ON coalesce(r.region, s.region) = s.region
"""
# The run's clock per meter interval length, region and channel, with one dense integer key:
# 5-minute steps since the run's first instant, then the length (in 5 minutes: 1..6), region
# and channel. A small dense key lets DuckDB probe it as an array (its perfect hash join).
_CLOCK_SQL = """
CREATE OR REPLACE TEMP TABLE _kx AS
SELECT k.*, m.minutes, r.region_idx, s.sfx, {spot} AS spot_per_mwh,
       (k.ts_us - {base}) // 300000000 * {step} + m.minutes // 5 * {per_len} + r.region_idx * 3 + s.sfx
         AS key
FROM _clock k CROSS JOIN (VALUES (5), (10), (15), (30)) m(minutes) CROSS JOIN _regions r
CROSS JOIN (VALUES {sfx}) s(sfx)
{price_join}
"""
_PRICE_JOIN = (
    "LEFT JOIN _prices p ON p.region = r.region AND p.ts_us = k.ts_us "
    "AND p.interval_minutes = m.minutes"
)
# The local days on which each clock key (with its interval length) occurs, at instants
# aligned to that length: a line's first and last day are looked up here, not aggregated over
# every read (two aggregates fewer in the pass; see _with_dates).
_KEY_DAYS_SQL = """
SELECT DISTINCT ckm, dno FROM _kc WHERE ts_us % (minutes * 60000000) = 0 ORDER BY dno
"""
# One pass over the stored numbers: every read of the segments' channels inside its segment,
# summed exactly (tariffs.sql.exact_sum) per segment and clock key with interval length
# (``ckm = ck x 7 + minutes / 5``: two group keys, not three, is ~15% faster). Literal SQL (no bound parameters: DuckDB
# 1.5 plans prepared versions of such scans much slower); the only values written in are
# integers computed here or read from the store.
_PASS_SQL = """
SELECT sc.seg, kc.ckm, {quantity} AS quantity,
       count(*) AS n_intervals{amounts}
FROM _sc sc
JOIN meter_values v ON v.channel_id = sc.channel_id AND v.is_current{missing}
JOIN _kc kc ON kc.key = (epoch_us(v.interval_start) - {base}) // 300000000 * {step}
     + v.interval_minutes // 5 * {per_len} + sc.region_idx * 3 + sc.sfx
WHERE v.interval_start >= sc.utc_from AND v.interval_start < sc.utc_to{time}
GROUP BY ALL
"""
# Intervals with an estimated (quality E) read on any of the segment's channels, as the reference
# counts them (an interval estimated on import and export counts once): a filtered scan, run
# only when the store has such flags.
_ESTIMATED_SQL = """
SELECT sc.seg, count(DISTINCT v.interval_start) AS estimated_intervals
FROM _sc sc JOIN meter_values v ON v.channel_id = sc.channel_id AND v.is_current
     AND v.flag_id IN ({ids})
WHERE v.interval_start >= sc.utc_from AND v.interval_start < sc.utc_to{time}
GROUP BY ALL
"""
# Can a spot slot's floor or cap bind anywhere in this run (for the batch's loss factors)? When
# not, its amount is the exact linear form lf x sum(kWh x sb) + sum(kWh x sa).
_BINDS_SQL = """
SELECT coalesce(bool_or(lo < sf{j} OR hi > sc{j} OR lo < sfi{j}), false) FROM (
  SELECT *, least(sb{j} * a, sb{j} * b) + sa{j} AS lo, greatest(sb{j} * a, sb{j} * b) + sa{j} AS hi
  FROM (SELECT k.*, CASE WHEN slf{j} THEN l.lo_lf ELSE 1.0 END AS a,
               CASE WHEN slf{j} THEN l.hi_lf ELSE 1.0 END AS b
        FROM _kc k, (SELECT min(loss_factor) AS lo_lf, max(loss_factor) AS hi_lf FROM _segs) l))
"""


def _with_dates(agg: pl.DataFrame, key_days: pl.DataFrame, segs: pl.DataFrame) -> pl.DataFrame:
    """``dno_from``/``dno_to`` of each (segment, clock key) row: the first and last local day in
    the segment on which the key occurs.

    For a segment that is billed (not held: every read of its channels present) this is the
    first and last day with a read of that key, which is what the reference aggregates; a held
    segment's lines are never written.
    """
    epoch = pl.date(1970, 1, 1)
    bounds = segs.select(
        "seg",
        (pl.col("start") - epoch).dt.total_days().cast(pl.Int32).alias("d0"),
        ((pl.col("end") - epoch).dt.total_days() - 1).cast(pl.Int32).alias("d1"),
    )
    days = key_days.select(pl.col("ckm").cast(pl.Int64), pl.col("dno").cast(pl.Int32)).sort("dno")
    rows = agg.join(bounds, on="seg").with_columns(pl.col("ckm").cast(pl.Int64))
    first = rows.sort("d0").join_asof(
        days.rename({"dno": "dno_from"}), left_on="d0", right_on="dno_from", by="ckm",
        strategy="forward", check_sortedness=False,
    )  # fmt: skip
    return first.sort("d1").join_asof(
        days.rename({"dno": "dno_to"}), left_on="d1", right_on="dno_to", by="ckm",
        strategy="backward", check_sortedness=False,
    ).drop("d0", "d1")  # fmt: skip


def _flag_ids(store: Store, quality: str) -> list[int]:
    rows = store.con.execute("SELECT flag_id FROM meter_flags WHERE quality = ?", [quality])
    return [int(r[0]) for r in rows.fetchall()]


def _in_list(ids: list[int]) -> str:
    return ", ".join(str(int(i)) for i in ids)


def _component_rows(
    agg: pl.DataFrame, kc_map: pl.DataFrame, segs: pl.DataFrame, spec: PassComponent
) -> pl.DataFrame:
    """The component's aggregate rows (one per segment, period and rate in force) from the pass."""
    code = SUFFIX_CODE[spec.suffix]
    i, j = spec.index, spec.slot
    keyed = kc_map.filter(pl.col("sfx") == code)
    common = [
        pl.sum("quantity"),
        pl.min("dno_from").alias("date_from"),
        pl.max("dno_to").alias("date_to"),
        pl.sum("n_intervals"),
        pl.min("minutes"),
        (pl.col("minutes") * pl.col("n_intervals")).sum().alias("covered_minutes"),
    ]
    dates = [pl.from_epoch(c, time_unit="d") for c in ("date_from", "date_to")]
    if spec.varying:
        rows = agg.join(keyed.select("ck", "nospot", f"sa{j}"), on="ck")
        if f"amount{j}" in rows.columns:
            amount = pl.col(f"amount{j}").sum()
        else:  # linear: lf x sum(kWh x spot part) + sum over clock keys of adders x kWh
            lf = pl.col("loss_factor").first() if spec.loss_factors else pl.lit(1.0)
            amount = pl.col(f"sumb{j}").sum() * lf + (pl.col(f"sa{j}") * pl.col("quantity")).sum()
        return (
            rows.join(segs.select("seg", "loss_factor"), on="seg")
            .sort("seg", "ckm")  # a fixed order of addition: the same bits on every run
            .group_by("seg", maintain_order=True)
            .agg(
                *common,
                amount.alias("amount_raw"),
                pl.col("n_intervals").filter(pl.col("nospot")).sum().alias("n_unpriced"),
            )
            .with_columns(
                *dates,
                pl.lit(0, pl.Int64).alias("didx"),
                pl.lit(None, pl.Float64).alias("rate"),
                pl.lit(None, pl.Date).alias("rate_from"),
            )
        )
    keyed = keyed.select(
        "ck",
        pl.col(f"d{i}").cast(pl.Int64).alias("didx"),
        pl.col(f"r{i}").alias("rate"),
        pl.col(f"f{i}").alias("rate_from"),
    )
    return (
        agg.join(keyed, on="ck")
        .sort("seg", "ckm")  # a fixed order of addition: the same bits on every run
        # per rate in force, as the reference groups: the rate's start date alone does not
        # separate a feed-in floor that changes while the rate stands
        .group_by("seg", "didx", "rate_from", "rate", maintain_order=True)
        .agg(
            *common,
            pl.col("n_intervals").filter(pl.col("rate").is_null()).sum().alias("n_unpriced"),
        )
        .with_columns(*dates, pl.lit(None, pl.Float64).alias("amount_raw"))
    )


def _lines(
    comp: Energy | FeedIn, spec: PassComponent, rows: pl.DataFrame, extra: Sequence[str] = ()
) -> pl.DataFrame:
    """Bill lines of one component from its aggregate rows (plus the ``extra`` columns)."""
    labels = dict(enumerate(spec.labels))
    sign = spec.sign
    amount = (
        pl.col("amount_raw") * sign if spec.varying else pl.col("rate") * pl.col("quantity") * sign
    )
    rate = (
        pl.when(pl.col("quantity") != 0).then(pl.col("amount") / pl.col("quantity") * sign)
        if spec.varying
        else pl.col("rate")
    )
    lines = (
        rows.with_columns(amount.alias("amount"))
        .with_columns(
            rate.alias("rate"),
            pl.lit(spec.index, pl.Int32).alias("order"),
            pl.lit(comp.name).alias("component"),
            pl.col("didx").replace_strict(labels, return_dtype=pl.Utf8).alias("detail"),
            pl.lit("kWh").alias("unit"),
            pl.lit(spec.taxable).alias("taxable"),
            pl.col("quantity").cast(pl.Float64),
            pl.col("n_intervals").cast(pl.Int64),
        )
        .with_columns(_note_expr(comp))
        .select(*LINE_COLUMNS, *extra)
    )
    return lines


def channel_totals(
    agg: pl.DataFrame, kc_map: pl.DataFrame, estimated: pl.DataFrame, suffixes: list[str]
) -> pl.DataFrame:
    """Per segment, from the pass itself: kWh and covered minutes of each channel the pass read
    (``suffixes``; the others NULL), the finest import read length (``import_interval``), the
    import intervals without a spot price and the estimated intervals. The bill's holds come
    from these (:func:`read_counts`, :func:`price_holds`), and the nightly stores them per
    accrued day (``accrual_days``), so a bill from accruals is held exactly as this pass holds
    it."""
    keyed = agg.join(kc_map.select("ck", "sfx", "nospot").unique("ck"), on="ck")
    keyed = keyed.sort("seg", "ckm")  # a fixed order of addition: the same bits on every run
    cols = []
    for sfx, name in (("E1", "import"), ("E2", "controlled"), ("B1", "export")):
        on = pl.col("sfx") == SUFFIX_CODE[sfx]
        if sfx not in suffixes:
            cols += [
                pl.lit(None, pl.Float64).alias(f"{name}_kwh"),
                pl.lit(None, pl.Int64).alias(f"{name}_minutes"),
            ]
            continue
        cols += [
            pl.col("quantity").filter(on).sum().alias(f"{name}_kwh"),
            (pl.col("minutes") * pl.col("n_intervals")).filter(on).sum().alias(f"{name}_minutes"),
        ]
    import_ = pl.col("sfx") == SUFFIX_CODE["E1"]
    cols += [
        pl.col("minutes").filter(import_).min().alias("import_interval"),
        pl.col("n_intervals").filter(import_ & pl.col("nospot")).sum().alias("unpriced_intervals"),
    ]
    return (
        keyed.group_by("seg", maintain_order=True).agg(cols).join(estimated, on="seg", how="left")
    )


def read_counts(totals: pl.DataFrame) -> pl.DataFrame:
    """Reads per segment and channel (for the missing-read holds, ``_read_holds``), from
    :func:`channel_totals` (or their sums over accrued days).

    Counted in intervals of the segment's finest import length: covered minutes divided by it,
    so a month of 30-minute reads with a 5-minute day (a meter exchange) is complete.
    """
    return totals.select(
        "seg",
        pl.col("import_interval").alias("minutes"),
        *[
            (pl.col(f"{name}_minutes") // pl.col("import_interval")).alias(f"n_{short}")
            for name, short in (("import", "import"), ("controlled", "cl"), ("export", "export"))
        ],
        "estimated_intervals",
    ).with_columns(pl.col("n_cl", "n_export", "estimated_intervals").fill_null(0))


def price_holds(totals: pl.DataFrame) -> pl.DataFrame:
    """Segments with import intervals that have no spot price (as the reference counts them),
    from :func:`channel_totals` (or their sums over accrued days)."""
    return totals.filter(pl.col("unpriced_intervals") > 0).select(
        "seg",
        pl.format("missing spot price for {} interval(s)", "unpriced_intervals").alias("reason"),
    )


def _create(store: Store, name: str, frame: pl.DataFrame) -> None:
    # small inputs copied into temp tables: DuckDB plans and scans them better than Arrow views
    store.con.register("_src", frame.to_arrow())
    try:
        store.con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM _src")
    finally:
        store.con.unregister("_src")


@dataclass
class PassResult:
    """What one channel pass returned: per segment and clock key (``ck``, ``minutes``) the
    summed kWh, interval count, spot amounts and first/last local day (``agg``); the clock keys'
    channel, rates and spot flags (``kc_map``); and estimated intervals per segment."""

    cp: ChannelPass
    agg: pl.DataFrame
    kc_map: pl.DataFrame
    estimated: pl.DataFrame


def _time_bounds(bounds: pl.DataFrame) -> str:
    """Constant bounds on the read's start (the segments' earliest and latest UTC instants) as
    typed literals made here from datetimes: unlike the per-segment join bounds, DuckDB prunes
    ``meter_values`` row groups by them (a one-day pass then reads the day, not the table)."""
    lo, hi = bounds["utc_from"].min(), bounds["utc_to"].max()
    assert isinstance(lo, datetime) and isinstance(hi, datetime)
    return with_literals(
        "\n  AND v.interval_start >= $lo AND v.interval_start < $hi", {"lo": lo, "hi": hi}
    )


def channel_pass_sums(
    store: Store,
    ctx: Context,
    bounds: pl.DataFrame,
    segs: pl.DataFrame,
    site_timezone: str | None = None,
) -> PassResult:
    """Run the product's channel pass over the current reads of ``bounds`` (``seg, nmi, region,
    loss_factor, utc_from, utc_to``: each segment's channels are read in ``[utc_from, utc_to)``);
    ``segs`` (``seg, start, end``: local dates) bound the first/last-day lookup.

    With ``site_timezone`` (the segments' sites' zone: every segment starts and ends at its
    local midnights) the pass reads the day arrays (:mod:`settlement.billing_days`), else every
    read of ``meter_values`` (the per-read pass: see :data:`PASS_ENV`)."""
    cp = channel_pass(ctx.product.components)
    if cp.needs_spot:
        prices = _price_table(store, bounds, None)
        regions = pl.DataFrame({"region": sorted(bounds["region"].unique().to_list())})
    else:
        prices, regions = _NO_PRICES, pl.DataFrame({"region": [None]}, schema={"region": pl.Utf8})
    regions = regions.with_row_index("region_idx").with_columns(pl.col("region_idx").cast(pl.Int64))
    clock = clock_frame(ctx, bounds)
    frames = {"_segs": bounds, "_prices": prices, "_clock": clock, "_regions": regions}
    codes = [SUFFIX_CODE[s] for s in cp.suffixes]
    dims = {
        "base": int(clock["ts_us"].min()),  # type: ignore[arg-type]
        "per_len": 3 * regions.height,
        "step": 7 * 3 * regions.height,
    }
    time = _time_bounds(bounds)
    try:
        for name, frame in frames.items():
            _create(store, name, frame)
        store.con.execute(
            _SEG_CHANNELS_SQL.format(
                codes=" ".join(f"WHEN '{s}' THEN {SUFFIX_CODE[s]}" for s in cp.suffixes),
                suffixes=", ".join(f"'{s}'" for s in cp.suffixes),
            )
        )
        store.con.execute(
            _CLOCK_SQL.format(
                **dims,
                sfx=", ".join(f"({c})" for c in codes),
                spot="p.spot_per_mwh" if cp.needs_spot else "NULL::DOUBLE",
                price_join=_PRICE_JOIN if cp.needs_spot else "",
            )
        )
        store.con.execute(
            "CREATE OR REPLACE TEMP TABLE _kc AS SELECT *, ck * 7 + minutes // 5 AS ckm FROM ("
            + cp.clock_sql
            + ")"
        )
        amounts, binding = [], []
        for j, clamp in enumerate(cp.clamped):
            binds = clamp and bool(store.con.sql(_BINDS_SQL.format(j=j)).fetchone()[0])  # type: ignore[index]
            amounts += spot_amount_sql(j, binds)
            binding.append(binds)
        missing, estimated_ids = _flag_ids(store, "N"), _flag_ids(store, "E")
        if site_timezone is not None:
            agg, estimated = array_pass(
                store, cp, binding, bounds, site_timezone, missing, estimated_ids
            )
        else:
            agg = store.con.sql(
                _PASS_SQL.format(
                    **dims,
                    amounts="".join(",\n       " + a for a in amounts),
                    missing=f" AND v.flag_id NOT IN ({_in_list(missing)})" if missing else "",
                    time=time,
                    quantity=exact_sum("v.kwh"),
                )
            ).pl()
            estimated = (
                store.con.sql(_ESTIMATED_SQL.format(ids=_in_list(estimated_ids), time=time)).pl()
                if estimated_ids
                else pl.DataFrame(schema={"seg": pl.Int64, "estimated_intervals": pl.Int64})
            )
        key_days = store.con.sql(_KEY_DAYS_SQL).pl()
        agg = _with_dates(agg, key_days, segs).with_columns(
            (pl.col("ckm") // 7).alias("ck"),
            (pl.col("ckm") % 7 * 5).cast(pl.Int64).alias("minutes"),
        )
        fixed = [c for c in cp.components if not c.varying]
        kc_map = store.con.sql(
            "SELECT DISTINCT ck, sfx, nospot"
            + "".join(f", d{c.index}, r{c.index}, f{c.index}" for c in fixed)
            + "".join(f", sa{j}" for j in range(cp.slots))
            + " FROM _kc"
        ).pl()
    finally:
        for name in [*frames, "_sc", "_kx", "_kc"]:
            store.con.execute(f"DROP TABLE IF EXISTS {name}")
    kc_map = kc_map.with_columns(pl.col("sfx").cast(pl.UInt8))
    estimated = estimated.with_columns(pl.col("seg", "estimated_intervals").cast(pl.Int64))
    return PassResult(cp, agg, kc_map, estimated)


PASS_ENV = "FAIRSHARE_PASS"
"""``reads``: the per-read pass over ``meter_values``; else (the default, ``days``) the
day-array pass (:mod:`settlement.billing_days`) wherever the segments' sites share one zone.

Measured on bench_billing's store (100,000 accounts x September, 192 M reads; eleventh session,
the store cleared of earlier runs' bills): the day-array pass billed TOU + feed-in in 4.5 s and
the dynamic product in 5.0 s, the per-read pass in 6.1 s and 7.0 s; on the nightly's one
5-minute day its accruals took 0.9 s against 1.45 s."""


def pass_zone(zones: Sequence[str]) -> str | None:
    """The site time zone to run the day-array pass with, or None for the per-read pass: unless
    ``FAIRSHARE_PASS=reads``, when the segments' sites share one zone."""
    if os.environ.get(PASS_ENV, "days") == "reads" or len(set(zones)) != 1:
        return None
    return next(iter(zones))


def pass_lines(
    ctx: Context,
    cp: ChannelPass,
    rows_of: Callable[[PassComponent], pl.DataFrame],
    extra: Sequence[str] = (),
) -> list[pl.DataFrame]:
    """Each energy and feed-in component's bill lines before rounding (:func:`_lines`:
    unrounded ``amount``, plus the ``extra`` columns) from its aggregate rows ``rows_of(spec)``
    (per segment, period and rate in force: from a pass, or summed from accruals)."""
    by_index = dict(enumerate(ctx.product.components))
    parts = []
    for spec in cp.components:
        comp = by_index[spec.index]
        assert isinstance(comp, Energy | FeedIn)
        parts.append(_lines(comp, spec, rows_of(spec), extra))
    return parts


def component_frames(
    ctx: Context, res: PassResult, bounds: pl.DataFrame, extra: Sequence[str] = ()
) -> list[pl.DataFrame]:
    """:func:`pass_lines` of a pass's own aggregate rows."""
    return pass_lines(
        ctx, res.cp, lambda spec: _component_rows(res.agg, res.kc_map, bounds, spec), extra
    )


def bill_segments_sql(store: Store, ctx: Context, segs: pl.DataFrame) -> SegmentBills:
    """Price ``segs`` (one product, one clock) with the SQL fast path: one pass over the reads."""
    bounds = _utc_bounds(store, segs)
    zones = segs["timezone"].unique().to_list() if "timezone" in segs.columns else []
    res = channel_pass_sums(store, ctx, bounds, segs, pass_zone(zones))
    totals = channel_totals(res.agg, res.kc_map, res.estimated, res.cp.suffixes)
    counts = read_counts(totals)
    segments = segs.select("seg", "start", "end", "cycle_days", "concession")
    daily = component_lines(ctx, pl.LazyFrame(), segments, daily_only=True)
    lines = pl.concat([daily, *component_frames(ctx, res, bounds)], how="vertical_relaxed")
    holds = pl.concat(
        [_read_holds(counts, bounds, priced_suffixes(ctx.product)), price_holds(totals)]
    )
    est = counts.select("seg", pl.col("estimated_intervals").cast(pl.Int64)).filter(
        pl.col("estimated_intervals") > 0
    )
    return SegmentBills(lines=finish_lines(ctx, lines, segments), holds=holds, estimated=est)
