"""Nightly accruals: the interval charges of each account's product, settled per market day.

The nightly's settle step prices every market day twice: the retailer's wholesale cost
(:mod:`settlement.wholesale`) and, here, what each account's product charges for the day's
intervals, as its bill will (schema v8, :mod:`settlement.schema_accruals`). Analysts see a
customer's charges build up day by day (``daily_charges``) instead of only at month end, and a
revised day re-accrues with its re-settlement, in the same transaction.

A *piece* is an account's local day clipped to the market day (UTC+10) being settled: a market
day meets one or two local days of a site, and the product in force is the one enrolled on that
local day (enrolments, move-in and move-out are local dates, as billing has them). The pieces of
one product and site time zone are priced by the bill run's own channel pass
(:func:`settlement.billing_sql.channel_pass_sums`) with the pieces as its segments, bounded to
the day so that DuckDB reads the day's row groups only; the lines are the pass's energy and
feed-in rows before rounding (:func:`settlement.billing_sql.component_frames`), so an accrued
line is priced by exactly the bill's arithmetic.

What is not accrued, and why:

- day-based charges (daily supply, concessions, minimum charges, discounts) and per-period
  components (inclining blocks, demand charges): they are priced over the whole billing period
  at close; an accrual of them per day would be a different number from the bill's;
- accounts on a product with no product file, or on a product for another market region: the
  close holds such bills with the reason; the day's count of them is returned (``skipped``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import polars as pl

from settlement.billing_io import _read_holds, _utc_bounds
from settlement.billing_sql import (
    bill_segments_sql,
    channel_pass_sums,
    channel_totals,
    component_frames,
    pass_lines,
    pass_zone,
    price_holds,
    read_counts,
)
from settlement.store import Store, with_literals
from tariffs.calculus import Context, component_lines, priced_suffixes
from tariffs.calendar import holiday_dates
from tariffs.lines import SegmentBills, finish_lines
from tariffs.product import Product
from tariffs.sql import PassComponent, channel_pass, exact_sum

# Each account's local days that meet the market day [$start, $end) (``_zone_days``: see
# ZONE_DAYS_SQL), clipped to it, with the product enrolled on that local day. Local dates D-1,
# D and D+1 cover every site time zone within 14 hours of UTC+10.
PIECES_SQL = """
WITH c AS (
    SELECT account, nmi, region, timezone, dlf * mlf AS loss_factor, move_in, move_out
    FROM customers
), b AS (
    SELECT c.*, z.local_date, z.day_from, z.day_to
    FROM c JOIN _zone_days z USING (timezone)
    WHERE z.local_date >= c.move_in AND (c.move_out IS NULL OR z.local_date < c.move_out)
)
SELECT b.account, b.nmi, b.region, b.timezone, b.loss_factor, b.local_date, e.product,
       greatest(b.day_from, $start) AS utc_from, least(b.day_to, $end) AS utc_to,
       ((epoch(b.day_to) - epoch(b.day_from)) // 60)::INTEGER AS day_minutes
FROM b JOIN enrolments e ON e.account = b.account AND e.effective_from <= b.local_date
     AND (e.effective_to IS NULL OR b.local_date < e.effective_to)
ORDER BY b.account, b.local_date
"""
# The local days (D-1, D, D+1) of each site time zone that meet the market day, with their UTC
# bounds: converted once per zone and date (in a query of their own: inside PIECES_SQL the
# optimiser pushed the conversions down to every account's row, 1.7 s for 100,000 accounts).
ZONE_DAYS_SQL = """
SELECT * FROM (
    SELECT timezone, local_date, timezone(timezone, local_date::TIMESTAMP) AS day_from,
           timezone(timezone, (local_date + 1)::TIMESTAMP) AS day_to
    FROM (SELECT DISTINCT timezone FROM customers),
         (SELECT unnest([$day - 1, $day, $day + 1]) AS local_date))
WHERE day_to > $start AND day_from < $end
"""

_DAY_COLUMNS = [
    "settlement_date", "account", "nmi", "local_date", "product", "product_version", "currency",
    "region", "loss_factor", "utc_from", "utc_to", "day_minutes", "import_kwh", "controlled_kwh",
    "export_kwh", "import_interval", "import_minutes", "controlled_minutes", "export_minutes",
    "estimated_intervals", "unpriced_intervals",
]  # fmt: skip
_LINE_COLUMNS = [
    "settlement_date", "account", "local_date", "line_order", "component", "detail", "rate_from",
    "rate", "quantity_kwh", "n_intervals", "amount", "taxable",
]  # fmt: skip


def day_pieces(store: Store, day: dt.date) -> pl.DataFrame:
    """The pieces of market day ``day`` (see the module docstring), numbered ``seg`` from 1."""
    start = dt.datetime.combine(day, dt.time(0), tzinfo=dt.timezone(dt.timedelta(hours=10)))
    bounds = {"day": day, "start": start, "end": start + dt.timedelta(1)}
    zones = store.con.sql(with_literals(ZONE_DAYS_SQL, bounds)).pl()
    store.con.register("_zone_days", zones.to_arrow())
    try:
        pieces = store.con.sql(with_literals(PIECES_SQL, bounds)).pl()
    finally:
        store.con.unregister("_zone_days")
    return pieces.with_row_index("seg", offset=1).with_columns(pl.col("seg").cast(pl.Int64))


def accrue_group(
    store: Store, product: Product, timezone: str, pieces: pl.DataFrame, day: dt.date
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(accrual_days rows, accrual_lines rows)`` of one product's pieces in one site zone."""
    years = sorted({d.year for d in pieces["local_date"].to_list()})
    tz = product.timezone or timezone
    ctx = Context(product, tz, tuple(holiday_dates(product.holidays, years)))
    segs = pieces.select(
        "seg",
        pl.col("local_date").alias("start"),
        pl.col("local_date").dt.offset_by("1d").alias("end"),
    )
    bounds = pieces.select("seg", "nmi", "region", "loss_factor", "utc_from", "utc_to")
    res = channel_pass_sums(store, ctx, bounds, segs, pass_zone([timezone]))
    totals = channel_totals(res.agg, res.kc_map, res.estimated, res.cp.suffixes)
    key = pieces.select("seg", "account", "local_date")
    days = (
        pieces.join(totals, on="seg", how="left")
        .with_columns(
            pl.lit(day).alias("settlement_date"),
            pl.lit(product.version or "inline").alias("product_version"),
            pl.lit(product.currency).alias("currency"),
        )
        .with_columns(  # a piece without reads of a channel the product prices: zero
            pl.col(f"{name}_{what}").fill_null(0)
            for sfx, name in (("E1", "import"), ("E2", "controlled"), ("B1", "export"))
            if sfx in res.cp.suffixes
            for what in ("kwh", "minutes")
        )
        .with_columns(pl.col("estimated_intervals", "unpriced_intervals").fill_null(0))
        .with_columns(pl.col("import_interval").cast(pl.Int16))
        .select(_DAY_COLUMNS)
    )
    parts = component_frames(ctx, res, bounds, extra=("rate_from",))
    if not parts:
        return days, pl.DataFrame()
    lines = (
        pl.concat(parts, how="vertical_relaxed")
        .join(key, on="seg")
        .select(
            pl.lit(day).alias("settlement_date"),
            "account",
            "local_date",
            pl.col("order").alias("line_order"),
            "component",
            pl.col("detail").fill_null(""),
            "rate_from",
            "rate",
            pl.col("quantity").alias("quantity_kwh"),
            "n_intervals",
            "amount",
            "taxable",
        )
    )
    return days, lines


def accrue_day(store: Store, day: dt.date, products: dict[str, Product]) -> dict[str, int]:
    """Replace the accruals of market day ``day``; call inside the day's settlement transaction.

    Returns counts: ``pieces`` accrued, ``lines`` written and ``skipped`` pieces (a product with
    no product file, or of another market region: the close holds those bills).
    """
    store.con.execute("DELETE FROM accrual_days WHERE settlement_date = ?", [day])
    store.con.execute("DELETE FROM accrual_lines WHERE settlement_date = ?", [day])
    pieces = day_pieces(store, day)
    counts = {"pieces": 0, "lines": 0, "skipped": 0}
    groups = pieces.partition_by("product", "timezone", as_dict=True, maintain_order=True)
    for (pid, tz), group in groups.items():
        product = products.get(str(pid))
        if product is None:
            counts["skipped"] += group.height
            continue
        inside = group if product.region is None else group.filter(region=product.region)
        counts["skipped"] += group.height - inside.height
        if inside.is_empty():
            continue
        days, lines = accrue_group(store, product, str(tz), inside, day)
        _insert(store, "accrual_days", days)
        counts["pieces"] += days.height
        if lines.height:
            _insert(store, "accrual_lines", lines)
            counts["lines"] += lines.height
    return counts


def _insert(store: Store, table: str, frame: pl.DataFrame) -> None:
    """Append ``frame`` (columns in the table's order) to ``table`` (a name written here)."""
    store.con.register("_accrual_rows", frame.to_arrow())
    try:
        store.con.execute(f"INSERT INTO {table} SELECT * FROM _accrual_rows")
    finally:
        store.con.unregister("_accrual_rows")


# Segments (``_acc_segs``: seg, account, nmi, start, end, utc_from, utc_to, loss_factor, region,
# product, version: the segments of every product billed from accruals in the run) whose every
# local day is accrued, all on the segment's product version with its NMI, loss factor and
# region, from market days settled from every file ingested so far: their pieces (disjoint:
# local days cut by market days) start at the segment's start, end at its end and their spans
# add up to its span, so they tile it exactly (a site whose time zone changed since has pieces
# at other instants, and is not covered). With them, what the holds need
# (billing_sql.channel_totals summed over the accrued days): the finest import read length, the
# covered minutes of each channel, and the estimated and unpriced intervals (one scan of
# accrual_days for both: a second one cost 0.1 s a product on a 100,000-account month).
# $lo/$hi (literal dates): the market days that can hold the segments' local days (a local day
# is within a day of its market day in any time zone), so a long history's other days are
# pruned by their zone maps. A segment's own product's pieces only are joined to it (one scan
# for every product of the run, not one each): a segment with a day accrued on another product
# is still not covered, as its product's pieces then fall short of its span (an account's
# pieces are disjoint: its enrolments do not overlap, settlement.customers quarantines those
# that do).
COVERED_SQL = """
WITH a AS (
    SELECT s.seg, sum(epoch(a.utc_to) - epoch(a.utc_from)) AS covered_s,
           min(a.utc_from) AS first_from, max(a.utc_to) AS last_to,
           bool_and(a.product_version = s.version
                    AND a.nmi = s.nmi AND a.loss_factor = s.loss_factor AND a.region = s.region
                    AND d.input_max_file_id = $newest) AS current,
           min(a.import_interval)::BIGINT AS import_interval,
           sum(a.import_minutes)::BIGINT AS import_minutes,
           sum(a.controlled_minutes)::BIGINT AS controlled_minutes,
           sum(a.export_minutes)::BIGINT AS export_minutes,
           sum(a.estimated_intervals)::BIGINT AS estimated_intervals,
           sum(a.unpriced_intervals)::BIGINT AS unpriced_intervals
    FROM _acc_segs s
    JOIN accrual_days a ON a.account = s.account AND a.product = s.product
     AND a.local_date >= s.start AND a.local_date < s."end"
    JOIN settled_days d ON d.settlement_date = a.settlement_date
    WHERE a.settlement_date BETWEEN $lo AND $hi
    GROUP BY s.seg
)
SELECT s.seg, a.import_interval, a.import_minutes, a.controlled_minutes, a.export_minutes,
       a.estimated_intervals, a.unpriced_intervals
FROM _acc_segs s JOIN a USING (seg)
WHERE a.current AND a.covered_s = epoch(s.utc_to) - epoch(s.utc_from)
  AND a.first_from = s.utc_from AND a.last_to = s.utc_to
ORDER BY s.seg
"""
# The accrued lines of each segment, added up per component, period and rate in force (a
# spot-linked line's rate is its own mean, so it is not a key: ``rate_from`` is NULL there).
# A day's kWh and amount are exact sums of 1e-13 units (tariffs.sql.exact_sum) stored as
# DOUBLE, which turn back into the same integers, so their exact sum is the integer the pass
# adds over the same reads: the accrual close gives the pass's bits, whatever the thread order.
SEGMENT_LINES_SQL = """
SELECT s.seg, l.line_order, l.detail, l.rate_from,
       CASE WHEN l.rate_from IS NULL THEN NULL ELSE l.rate END AS rate,
       {quantity} AS quantity, sum(l.n_intervals)::BIGINT AS n_intervals,
       {amount} AS amount, min(l.local_date) AS date_from,
       max(l.local_date) AS date_to
FROM _acc_segs s JOIN _acc_cov USING (seg)
JOIN accrual_lines l ON l.account = s.account AND l.local_date >= s.start
 AND l.local_date < s."end"
WHERE l.settlement_date BETWEEN $lo AND $hi
GROUP BY ALL
""".format(quantity=exact_sum("l.quantity_kwh"), amount=exact_sum("l.amount"))
# A group's share of the cover (``_acc_grp``: its segments' numbers): what the holds need, per
# covered segment (made with the cover, :data:`COVERED_SQL`), and the accrued lines.
SEGMENT_DAYS_SQL = """
SELECT seg, import_interval, import_minutes, controlled_minutes, export_minutes,
       estimated_intervals, unpriced_intervals
FROM _acc_cov SEMI JOIN _acc_grp USING (seg) ORDER BY seg
"""
GROUP_LINES_SQL = "SELECT * FROM _acc_lines SEMI JOIN _acc_grp USING (seg)"


def _day_range(segs: pl.DataFrame) -> dict[str, dt.date]:
    """``$lo``/``$hi`` of :data:`COVERED_SQL` and :data:`SEGMENT_LINES_SQL`: the market days
    that can hold the local days of ``segs`` (``start`` to ``end``, end exclusive)."""
    lo, hi = segs.get_column("start").min(), segs.get_column("end").max()
    assert isinstance(lo, dt.date) and isinstance(hi, dt.date)
    return {"lo": lo - dt.timedelta(days=1), "hi": hi}


@contextmanager
def accrual_cover(store: Store, groups: Sequence[tuple[Product, pl.DataFrame]]) -> Iterator[None]:
    """Within the block, the segments of ``groups`` (each a product and segments on it, on the
    sites' own clock) that can be billed from their accruals (:data:`COVERED_SQL`), in the temp
    table ``_acc_cov``, and their accrued lines (:data:`SEGMENT_LINES_SQL`) in ``_acc_lines``:
    one scan of ``accrual_days`` and one of ``accrual_lines`` for every product of a run (one
    each per product cost 0.9 s more on a 100,000-account month of three products), read
    per group by :func:`covered_segments` and :func:`bill_segments_accrued`; dropped after."""
    frames = [
        segs.select(
            "seg", "account", "nmi", "start", "end", "loss_factor", "region", "timezone"
        ).with_columns(
            pl.lit(product.id).alias("product"),
            pl.lit(product.version or "inline").alias("version"),
        )
        for product, segs in groups
        if segs.height
    ]
    if not frames:
        yield
        return
    segs = pl.concat(frames)
    bounds = _utc_bounds(store, segs)
    acc = segs.drop("timezone").join(bounds.select("seg", "utc_from", "utc_to"), on="seg")
    newest = store.con.execute("SELECT coalesce(max(file_id), 0) FROM ingested_files").fetchone()
    days = _day_range(segs)
    store.con.register("_acc_segs", acc.to_arrow())
    try:
        store.con.execute(
            f"CREATE OR REPLACE TEMP TABLE _acc_cov AS {with_literals(COVERED_SQL, days)}",
            {"newest": int(newest[0]) if newest else 0},
        )
        store.con.execute(
            "CREATE OR REPLACE TEMP TABLE _acc_lines AS " + with_literals(SEGMENT_LINES_SQL, days)
        )
        yield
    finally:
        store.con.unregister("_acc_segs")
        store.con.execute("DROP TABLE IF EXISTS _acc_cov")
        store.con.execute("DROP TABLE IF EXISTS _acc_lines")


def covered_segments(store: Store, segs: pl.DataFrame) -> list[int]:
    """The segments of ``segs`` (registered as ``_acc_grp``) that the cover made by
    :func:`accrual_cover` found billable from their accruals, in order (a join: a list
    parameter tested per accrued row took 1.5 s a product)."""
    return [
        int(r[0])
        for r in store.con.execute(
            "SELECT seg FROM _acc_cov SEMI JOIN _acc_grp USING (seg) ORDER BY seg"
        ).fetchall()
    ]


def _accrued_rows(spec: PassComponent, frame: pl.DataFrame) -> pl.DataFrame:
    """One component's accrued sums as the pass's aggregate rows (``billing_sql._lines`` then
    recomputes a fixed rate's amount as rate x summed kWh, as the pass does; a spot-linked
    line's is the sum of its days' amounts)."""
    return frame.filter(pl.col("line_order") == spec.index).with_columns(
        pl.col("detail")
        .replace_strict({name: i for i, name in enumerate(spec.labels)}, return_dtype=pl.Int64)
        .alias("didx"),
        (pl.col("amount") * spec.sign).alias("amount_raw"),
    )


def bill_segments_accrued(
    store: Store, ctx: Context, segs: pl.DataFrame, bounds: pl.DataFrame, covered: list[int]
) -> SegmentBills:
    """Price the ``covered`` segments of ``segs`` (registered as ``_acc_grp``, inside an
    :func:`accrual_cover`) from their accruals: the same lines, holds
    and rounding as :func:`settlement.billing_sql.bill_segments_sql`, from the sums the nightly
    stored instead of a pass over the period's reads."""
    frame = store.con.execute(GROUP_LINES_SQL).pl()
    totals = store.con.execute(SEGMENT_DAYS_SQL).pl()
    counts = read_counts(totals)
    chosen = pl.DataFrame({"seg": covered}, schema={"seg": pl.Int64})
    own = segs.join(chosen, on="seg")
    segments = own.select("seg", "start", "end", "cycle_days", "concession")
    daily = component_lines(ctx, pl.LazyFrame(), segments, daily_only=True)
    accrued = pass_lines(
        ctx, channel_pass(ctx.product.components), lambda spec: _accrued_rows(spec, frame)
    )
    lines = pl.concat([daily, *accrued], how="vertical_relaxed")
    holds = pl.concat(
        [
            _read_holds(counts, bounds.join(chosen, on="seg"), priced_suffixes(ctx.product)),
            price_holds(totals),
        ]
    )
    est = counts.select("seg", "estimated_intervals").filter(pl.col("estimated_intervals") > 0)
    return SegmentBills(lines=finish_lines(ctx, lines, segments), holds=holds, estimated=est)


def on_site_clock(product: Product, timezones: Sequence[str]) -> bool:
    """Whether ``product`` prices on the clock of sites in ``timezones`` (its own unset, or one
    of theirs): only then can its bills come from the accruals, kept per site-local day. A
    product on its own clock dates its lines by days of that clock, so its bills are priced by
    the pass."""
    return product.timezone is None or product.timezone in timezones


def bill_segments_fast(store: Store, ctx: Context, segs: pl.DataFrame) -> SegmentBills:
    """Price ``segs`` (one SQL-capable product, one clock): the segments whose days are all
    accrued from current data from their accruals (:func:`bill_segments_accrued`), the rest
    with the one-pass bill run (:func:`settlement.billing_sql.bill_segments_sql`). Call it
    inside an :func:`accrual_cover` that includes ``segs`` when the product is on the sites'
    clock (:func:`on_site_clock`)."""
    if not on_site_clock(ctx.product, segs["timezone"].unique().to_list()):
        return bill_segments_sql(store, ctx, segs)
    bounds = _utc_bounds(store, segs)
    store.con.register("_acc_grp", segs.select("seg").to_arrow())
    try:
        covered = covered_segments(store, segs)
        parts = [bill_segments_accrued(store, ctx, segs, bounds, covered)] if covered else []
    finally:
        store.con.unregister("_acc_grp")
    rest = segs.filter(~pl.col("seg").is_in(covered))
    if rest.height:
        parts.append(bill_segments_sql(store, ctx, rest))
    return SegmentBills(
        lines=pl.concat([p.lines for p in parts], how="vertical_relaxed"),
        holds=pl.concat([p.holds for p in parts], how="vertical_relaxed"),
        estimated=pl.concat([p.estimated for p in parts], how="vertical_relaxed"),
    )


def account_charges(
    store: Store, account: str, date_from: dt.date, date_to: dt.date
) -> pl.DataFrame:
    """The accrued interval charges of ``account`` per local day and component, from
    ``date_from`` to ``date_to`` inclusive (the ``daily_charges`` view), oldest first."""
    return store.con.execute(
        "SELECT local_date, product, product_version, component, detail, quantity_kwh::DOUBLE "
        "AS quantity_kwh, n_intervals, mean_rate::DOUBLE AS mean_rate, amount, currency, "
        "taxable, estimated_intervals, complete FROM daily_charges WHERE account = ? "
        "AND local_date BETWEEN ? AND ? ORDER BY local_date, line_order, detail",
        [account, date_from, date_to],
    ).pl()
