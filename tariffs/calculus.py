"""The bill calculus: price every account-segment's intervals and days on a product, vectorised.

A *segment* is one account on one product for ``[start, end)`` local dates inside one billing
cycle (a mid-cycle product switch or move-in/out makes shorter segments). Inputs are frames (see
:data:`INTERVAL_SCHEMA` and :data:`SEGMENT_SCHEMA`); the output is one row per bill line per
segment, with unrounded amounts (:mod:`tariffs.lines` rounds them). Every component is one polars
pipeline over all segments at once; rows are grouped per rate in force, so a line never spans a
rate change (the change splits the line, OpenFisca style).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import polars as pl
from pydantic import BaseModel

from tariffs.calendar import (
    describe_windows,
    period_expr,
    period_rate_exprs,
    windows_expr,
    with_local_attributes,
)
from tariffs.dated import Dated, DatedEntry, dated_expr, dated_from_expr, first_missing_day
from tariffs.product import (
    Adder,
    BlockEnergy,
    Concession,
    DailySupply,
    Demand,
    Discount,
    Energy,
    FeedIn,
    MinimumCharge,
    Product,
    SpotPrice,
)
from tariffs.sql import SUFFIX


def component_suffix(comp: object) -> str | None:
    """The meter channel (NEM12 suffix) a kWh-priced component bills: its channel for energy
    and block energy, B1 for feed-in; None for the others."""
    if isinstance(comp, Energy | BlockEnergy):
        return SUFFIX[comp.channel]
    if isinstance(comp, FeedIn):
        return SUFFIX["export"]
    return None


def priced_suffixes(product: Product) -> frozenset[str]:
    """The meter channels whose reads ``product`` bills: E1 always (energy and demand), E2 when
    a component prices the controlled load, B1 when one pays feed-in."""
    found = {component_suffix(c) for c in product.components}
    return frozenset({"E1"} | {s for s in found if s is not None})


def whole_bill_changes(product: Product) -> list[tuple[str, date]]:
    """(parameter, date) of every change of a parameter that applies to a whole bill's lines
    rather than per interval or day: the tax rate, a discount's fraction and a minimum charge.
    Lines are not split at these dates, so a bill whose period strictly contains one would be
    priced at a single value; the bill run holds such a bill instead (see products.md)."""
    out = [("tax_rate", e.effective_from) for e in product.tax_rate[1:]]
    for comp in product.components:
        if isinstance(comp, MinimumCharge):
            out += [(f"{comp.name} rate", e.effective_from) for e in comp.rate[1:]]
        elif isinstance(comp, Discount):
            out += [(f"{comp.name} fraction", e.effective_from) for e in comp.fraction[1:]]
    return sorted(out, key=lambda x: (x[1], x[0]))


INTERVAL_SCHEMA: dict[str, pl.DataType] = {
    "seg": pl.Int64(),
    "interval_start": pl.Datetime("us", "UTC"),
    "interval_minutes": pl.Int32(),
    "import_kwh": pl.Float64(),
    "controlled_kwh": pl.Float64(),
    "export_kwh": pl.Float64(),
    "spot_per_mwh": pl.Float64(),
    "loss_factor": pl.Float64(),
}
"""The interval frame's columns. Optional: ``estimated`` (bool), and ``import_read`` (bool) from
the store when a segment's channels are read at different interval lengths: a row with
``import_read`` false carries a controlled-load or export read of its own (its own start, length
and spot price; import_kwh 0), and a null controlled_kwh or export_kwh means the row has no read
of that channel (it is on a row of its own). Each component then uses only the rows with a read
of its channel (:func:`_rows_of`)."""
SEGMENT_SCHEMA: dict[str, pl.DataType] = {
    "seg": pl.Int64(),
    "start": pl.Date(),
    "end": pl.Date(),
    "cycle_days": pl.Int32(),
    "concession": pl.Boolean(),
}
CHANNEL_COLUMN = {
    "import": "import_kwh",
    "controlled_load": "controlled_kwh",
    "export": "export_kwh",
}


def _rows_of(iv: pl.LazyFrame, column: str) -> pl.LazyFrame:
    """The rows of ``iv`` with a read of ``column``'s channel (all rows without ``import_read``)."""
    if "import_read" not in iv.collect_schema().names():
        return iv
    if column == CHANNEL_COLUMN["import"]:
        return iv.filter(pl.col("import_read"))
    return iv.filter(pl.col(column).is_not_null())


PRICED_COLUMNS = ["seg", "interval_start", "local_date", "component", "detail", "quantity", "rate"]
LINE_COLUMNS = [
    "seg", "order", "component", "detail", "quantity", "unit", "rate", "amount", "taxable",
    "date_from", "date_to", "n_intervals", "note",
]  # fmt: skip


@dataclass(frozen=True)
class Context:
    """Per-call settings: the product, the local clock and the holiday list."""

    product: Product
    timezone: str
    holidays: tuple[date, ...]


def day_frame(segments: pl.DataFrame) -> pl.LazyFrame:
    """One row per segment and local day supplied: ``seg, local_date, month_key, days_in_month``."""
    return (
        segments.lazy()
        .filter(pl.col("end") > pl.col("start"))
        .select(
            "seg",
            pl.date_ranges("start", pl.col("end") - pl.duration(days=1)).alias("local_date"),
        )
        .explode("local_date", empty_as_null=True)
        .with_columns(
            (pl.col("local_date").dt.year() * 100 + pl.col("local_date").dt.month()).alias(
                "month_key"
            ),
            pl.col("local_date").dt.month_end().dt.day().cast(pl.Int32).alias("days_in_month"),
        )
    )


def _tou_inline(periods: Sequence[object]) -> pl.Expr:
    from tariffs.product import TouPeriod

    ps = [p for p in periods if isinstance(p, TouPeriod)]
    default = next(p for p in ps if p.default)
    expr = dated_expr(default.rate)
    for p in reversed([p for p in ps if not p.default]):
        expr = pl.when(windows_expr(p.windows)).then(dated_expr(p.rate)).otherwise(expr)
    return expr


def _adder_expr(adder: Adder) -> pl.Expr:
    if adder.rate is not None:
        return dated_expr(adder.rate)
    assert adder.periods is not None
    return _tou_inline(adder.periods)


def _clamp(price: pl.Expr, floor: Dated | None, cap: Dated | None) -> pl.Expr:
    """Clamp keeping nulls null (a missing spot price must stay missing)."""
    if floor is not None:
        f = dated_expr(floor)
        price = pl.when(price < f).then(f).otherwise(price)
    if cap is not None:
        c = dated_expr(cap)
        price = pl.when(price > c).then(c).otherwise(price)
    return price


def spot_price_expr(spot: SpotPrice) -> pl.Expr:
    """Per-interval price [currency/kWh] of a spot-linked rate (null where spot is missing)."""
    price = pl.col("spot_per_mwh") / 1000.0 * dated_expr(spot.multiplier)
    if spot.apply_loss_factors:
        price = price * pl.col("loss_factor")
    for a in spot.adders:
        price = price + _adder_expr(a)
    return _clamp(price, spot.floor, spot.cap)


def spot_parts_exprs(spot: SpotPrice) -> list[pl.Expr]:
    """Named parts of a spot-linked price, for the interval drill-down [currency/kWh]."""
    wholesale = pl.col("spot_per_mwh") / 1000.0 * dated_expr(spot.multiplier)
    if spot.apply_loss_factors:
        wholesale = wholesale * pl.col("loss_factor")
    parts = [wholesale.alias("part_wholesale")]
    parts += [_adder_expr(a).alias(f"part_{a.name}") for a in spot.adders]
    return parts


def _labels(comp: object) -> list[str]:
    """Every detail label a per-interval component can produce (its Enum categories)."""
    if isinstance(comp, BlockEnergy):
        return [_block_label(comp, i) for i in range(len(comp.blocks))]
    periods = getattr(comp, "periods", None)
    if periods is not None:
        return [p.name for p in periods]
    return ["", "spot-linked"]


def _priced_energy(comp: Energy | FeedIn, iv: pl.LazyFrame) -> pl.LazyFrame:
    column = CHANNEL_COLUMN["export" if isinstance(comp, FeedIn) else comp.channel]
    qty = pl.col(column)
    iv = _rows_of(iv, column)
    labels = pl.Enum(_labels(comp))
    if comp.rate is not None:
        detail = pl.lit("", labels)
        rate, since = dated_expr(comp.rate), dated_from_expr(comp.rate)
    elif comp.periods is not None:
        iv = iv.with_columns(period_expr(comp.periods).alias("_period"))
        detail = pl.col("_period")
        rate, since = period_rate_exprs(comp.periods, "_period")
    else:
        assert comp.spot is not None
        detail, rate = pl.lit("spot-linked", labels), spot_price_expr(comp.spot)
        since = pl.lit(None, pl.Date)
    if isinstance(comp, FeedIn) and comp.floor is not None:
        rate = _clamp(rate, comp.floor, None)
    return iv.select(
        "seg",
        "interval_start",
        "interval_minutes",  # with the start, names the read (channels may differ in length)
        "local_date",
        detail.alias("detail"),
        qty.alias("quantity"),
        rate.alias("rate"),
        since.alias("rate_from"),
    )


def _block_label(comp: BlockEnergy, i: int) -> str:
    lo = 0 if i == 0 else comp.blocks[i - 1].up_to_kwh
    hi = comp.blocks[i].up_to_kwh
    return f"block {i + 1}: {lo:g}-{'' if hi is None else f'{hi:g}'} kWh per {comp.period}"


def _block_key(period: str) -> pl.Expr:
    if period == "day":
        return pl.col("local_date").cast(pl.Int64)
    if period == "month":
        return (pl.col("local_date").dt.year() * 100 + pl.col("local_date").dt.month()).cast(
            pl.Int64
        )
    return pl.lit(0, pl.Int64)


def _block_version(comp: BlockEnergy) -> pl.Expr:
    """The latest tier-rate change in force on the row's day (a change splits the block piece)."""
    return pl.max_horizontal([dated_from_expr(b.rate) for b in comp.blocks])


def _priced_blocks(
    comp: BlockEnergy, iv: pl.LazyFrame, days: pl.LazyFrame, segments: pl.DataFrame
) -> pl.LazyFrame:
    """Allocate each interval's kWh to tiers by the running total in its (prorated) block piece."""
    key = ["seg", "_bkey", "_bver"]
    pieces = (
        days.with_columns(
            _block_key(comp.period).alias("_bkey"), _block_version(comp).alias("_bver")
        )
        .join(segments.lazy().select("seg", "cycle_days"), on="seg")
        .group_by(key)
        .agg(
            pl.len().alias("_piece_days"),
            pl.first("days_in_month"),
            pl.first("cycle_days"),
        )
        .with_columns(
            pl.when(pl.lit(comp.period == "day"))
            .then(1.0)
            .when(pl.lit(comp.period == "month"))
            .then(pl.col("_piece_days") / pl.col("days_in_month"))
            .otherwise(pl.col("_piece_days") / pl.col("cycle_days"))
            .alias("_share")
        )
        .select([*key, "_share"])
    )
    qty_col = CHANNEL_COLUMN[comp.channel]
    run = (
        _rows_of(iv, qty_col)
        .select("seg", "interval_start", "local_date", pl.col(qty_col).alias("_q"))
        .with_columns(_block_key(comp.period).alias("_bkey"), _block_version(comp).alias("_bver"))
        .sort("seg", "interval_start")
        .with_columns(pl.col("_q").cum_sum().over(key).alias("_cum"))
        .with_columns((pl.col("_cum") - pl.col("_q")).alias("_prev"))
        .join(pieces, on=key, how="left")
    )
    tiers = []
    lo = 0.0
    for i, b in enumerate(comp.blocks):
        hi = None if b.up_to_kwh is None else float(b.up_to_kwh)
        lo_e = pl.col("_share") * lo
        hi_e = None if hi is None else pl.col("_share") * hi

        def clip(x: pl.Expr, lo_e: pl.Expr = lo_e, hi_e: pl.Expr | None = hi_e) -> pl.Expr:
            y = pl.when(x < lo_e).then(lo_e).otherwise(x)
            return y if hi_e is None else pl.when(y > hi_e).then(hi_e).otherwise(y)

        label = _block_label(comp, i)
        tiers.append(
            run.select(
                "seg",
                "interval_start",
                "local_date",
                pl.lit(label, pl.Enum(_labels(comp))).alias("detail"),
                (clip(pl.col("_cum")) - clip(pl.col("_prev"))).alias("quantity"),
                dated_expr(b.rate).alias("rate"),
                dated_from_expr(b.rate).alias("rate_from"),
            )
        )
        lo = hi if hi is not None else lo
    return pl.concat(tiers)


def priced_intervals(ctx: Context, iv: pl.LazyFrame, segments: pl.DataFrame) -> pl.LazyFrame:
    """Every per-interval line contribution (the drill-down): one row per interval x line."""
    days = day_frame(segments)
    parts = []
    for comp in ctx.product.components:
        if isinstance(comp, Energy | FeedIn):
            priced = _priced_energy(comp, iv)
        elif isinstance(comp, BlockEnergy):
            priced = _priced_blocks(comp, iv, days, segments)
        else:
            continue
        parts.append(
            priced.with_columns(
                pl.lit(comp.name).alias("component"), pl.col("detail").cast(pl.Utf8)
            )
        )
    if not parts:
        return pl.LazyFrame(schema={c: pl.Utf8 for c in PRICED_COLUMNS})
    return pl.concat(parts, how="diagonal_relaxed")


def _aggregate_priced(
    priced: pl.LazyFrame, name: str, order: int, sign: float, taxable: bool
) -> pl.LazyFrame:
    """Fixed-rate rows grouped per rate in force; spot rows (null rate_from) per segment."""
    fixed = priced.filter(pl.col("rate_from").is_not_null())
    fixed_lines = fixed.group_by("seg", "detail", "rate_from", "rate").agg(
        pl.sum("quantity"),
        pl.min("local_date").alias("date_from"),
        pl.max("local_date").alias("date_to"),
        pl.len().alias("n_intervals"),
    )
    fixed_lines = fixed_lines.with_columns(
        (pl.col("rate") * pl.col("quantity") * sign).alias("amount")
    )
    varying = priced.filter(pl.col("rate_from").is_null())
    var_lines = (
        varying.group_by("seg", "detail")
        .agg(
            pl.sum("quantity"),
            ((pl.col("quantity") * pl.col("rate")).sum() * sign).alias("amount"),
            pl.min("local_date").alias("date_from"),
            pl.max("local_date").alias("date_to"),
            pl.len().alias("n_intervals"),
        )
        .with_columns(
            pl.when(pl.col("quantity") != 0)
            .then(pl.col("amount") / pl.col("quantity") * sign)
            .otherwise(None)
            .alias("rate")
        )
    )
    cols = ["seg", "detail", "quantity", "rate", "amount", "date_from", "date_to", "n_intervals"]
    return pl.concat([fixed_lines.select(cols), var_lines.select(cols)]).with_columns(
        pl.lit(name).alias("component"),
        pl.col("detail").cast(pl.Utf8),
        pl.lit(order, pl.Int32).alias("order"),
        pl.lit("kWh").alias("unit"),
        pl.lit(taxable).alias("taxable"),
    )


def _daily_lines(comp: DailySupply | Concession, days: pl.LazyFrame, order: int) -> pl.LazyFrame:
    sign = -1.0 if isinstance(comp, Concession) else 1.0
    return (
        days.with_columns(
            dated_expr(comp.rate).alias("rate"), dated_from_expr(comp.rate).alias("rate_from")
        )
        .group_by("seg", "rate_from", "rate")
        .agg(
            pl.len().cast(pl.Float64).alias("quantity"),
            pl.min("local_date").alias("date_from"),
            pl.max("local_date").alias("date_to"),
        )
        .with_columns(
            (pl.col("rate") * pl.col("quantity") * sign).alias("amount"),
            pl.lit(comp.name).alias("component"),
            pl.lit("").alias("detail"),
            pl.lit(0, pl.UInt32).alias("n_intervals"),
            pl.lit(order, pl.Int32).alias("order"),
            pl.lit("day").alias("unit"),
            pl.lit(isinstance(comp, DailySupply)).alias("taxable"),
        )
    )


def _demand_lines(comp: Demand, iv: pl.LazyFrame, days: pl.LazyFrame, order: int) -> pl.LazyFrame:
    # the kW is the month's (over the segment's days in it); a rate change splits the days, each
    # piece charged at its rate for its share of them. Per piece, the peak of 16-31 July would be
    # charged for those days even when the month's peak came earlier, and merely re-publishing a
    # rate would lower the bill (tests/reference/14-demand-rate-change.toml)
    month = ["seg", "month_key"]
    key = [*month, "rate_from"]
    pieces = (
        days.with_columns(
            dated_expr(comp.rate).alias("rate"), dated_from_expr(comp.rate).alias("rate_from")
        )
        .group_by(key)
        .agg(
            pl.len().alias("piece_days"),
            pl.first("days_in_month"),
            pl.first("rate"),
            pl.min("local_date").alias("date_from"),
            pl.max("local_date").alias("date_to"),
        )
    )
    kw = (
        _rows_of(iv, "import_kwh")
        .filter(windows_expr(comp.windows))
        .with_columns(
            (pl.col("local_date").dt.year() * 100 + pl.col("local_date").dt.month()).alias(
                "month_key"
            ),
            (pl.col("import_kwh") * 60.0 / pl.col("interval_minutes")).alias("_kw"),
        )
        .group_by(month)
        .agg(
            pl.col("_kw").top_k(comp.peaks).mean().alias("quantity"), pl.len().alias("n_intervals")
        )
    )
    scale = (
        pl.col("piece_days") / pl.col("days_in_month")
        if comp.unit == "per_kw_month"
        else pl.col("piece_days").cast(pl.Float64)
    )
    return (
        pieces.join(kw, on=month, how="left")
        .with_columns(pl.col("quantity").fill_null(0.0), pl.col("n_intervals").fill_null(0))
        .with_columns(
            (pl.col("rate") * pl.col("quantity") * scale).alias("amount"),
            pl.lit(comp.name).alias("component"),
            pl.format(
                "{} peak(s), {} of {} days", pl.lit(comp.peaks), "piece_days", "days_in_month"
            ).alias("detail"),
            pl.lit(order, pl.Int32).alias("order"),
            pl.lit("kW").alias("unit"),
            pl.lit(True).alias("taxable"),
        )
    )


# Credit lines (feed-in, concession, discount) show their quantity and rate as positive numbers
# and the amount negative (a feed-in at a negative spot price: a charge); the explanation says
# so, so that its arithmetic checks as written.
CREDIT_NOTE = "credited: amount = -(quantity x rate)"
_EXPORT_NOTE = f"export, {CREDIT_NOTE}; "


def _note(comp: object) -> str:
    """Static text explaining how a component is computed (goes in every line's explanation)."""
    if isinstance(comp, FeedIn):
        return _EXPORT_NOTE + _energy_note(comp)
    if isinstance(comp, Energy):
        return _energy_note(comp)
    if isinstance(comp, Demand):
        return f"mean of top {comp.peaks} kW in {describe_windows(comp.windows)} per month, {comp.unit}"
    if isinstance(comp, BlockEnergy):
        return f"thresholds per {comp.period}, prorated by days supplied"
    if isinstance(comp, DailySupply):
        return "exact count of days supplied x daily rate"
    if isinstance(comp, Concession):
        return f"concession per day supplied (no tax), {CREDIT_NOTE}"
    return type(comp).__name__


def _energy_note(comp: Energy | FeedIn) -> str:
    """How the rate of an energy or feed-in component without TOU periods is found: spot
    formula or flat (a TOU line's note is its own period's, :func:`_note_expr`)."""
    if comp.spot is not None:
        s = comp.spot
        lf = " x DLF x MLF" if s.apply_loss_factors else ""
        adders = "".join(f" + {a.name}" for a in s.adders)
        bounds = (" floor" if s.floor else "") + (" cap" if s.cap else "")
        return f"per interval: spot/1000 x multiplier{lf}{adders}, clamped to{bounds or ' nothing'}"
    return "flat rate"


def _note_expr(comp: object) -> pl.Expr:
    """Per-line note: for TOU lines only the line's own period and windows."""
    if isinstance(comp, Demand):
        # the line's days of the month (a monthly rate's share of it), in its own explanation
        share = (
            [
                pl.col("piece_days").cast(pl.Utf8),
                pl.lit(" / "),
                pl.col("days_in_month").cast(pl.Utf8),
            ]
            if comp.unit == "per_kw_month"
            else [pl.col("piece_days").cast(pl.Utf8)]
        )
        head = pl.lit(f"{_note(comp)}: amount = quantity x rate x ")
        return pl.concat_str([head, *share, pl.lit(" days")]).alias("note")
    periods = getattr(comp, "periods", None)
    if periods is None:
        return pl.lit(_note(comp)).alias("note")
    texts = {
        p.name: f"{p.name}: {'times outside the other periods' if p.default else describe_windows(p.windows)}"
        for p in periods
    }
    if isinstance(comp, FeedIn):
        texts = {name: _EXPORT_NOTE + text for name, text in texts.items()}
    return pl.col("detail").replace_strict(texts, default="", return_dtype=pl.Utf8).alias("note")


def component_lines(
    ctx: Context, iv: pl.LazyFrame, segments: pl.DataFrame, *, daily_only: bool = False
) -> pl.DataFrame:
    """Unrounded bill lines (LINE_COLUMNS) of every segment, before minimum charge and discounts.

    ``daily_only`` computes only the day-based components (``iv`` is then not used).
    """
    days = day_frame(segments)
    conc = segments.lazy().filter(pl.col("concession")).select("seg")
    frames: list[pl.LazyFrame] = []
    for order, comp in enumerate(ctx.product.components):
        if daily_only and isinstance(comp, Energy | FeedIn | BlockEnergy | Demand):
            continue
        if isinstance(comp, Energy | FeedIn):
            lf = _aggregate_priced(
                _priced_energy(comp, iv),
                comp.name,
                order,
                -1.0 if isinstance(comp, FeedIn) else 1.0,
                not isinstance(comp, FeedIn),
            )
        elif isinstance(comp, BlockEnergy):
            lf = _aggregate_priced(
                _priced_blocks(comp, iv, days, segments), comp.name, order, 1.0, True
            )
        elif isinstance(comp, DailySupply):
            lf = _daily_lines(comp, days, order)
        elif isinstance(comp, Concession):
            lf = _daily_lines(comp, days.join(conc, on="seg", how="semi"), order)
        elif isinstance(comp, Demand):
            lf = _demand_lines(comp, iv, days, order)
        else:
            continue
        frames.append(lf.with_columns(_note_expr(comp)).select(LINE_COLUMNS))
    cast = {
        "n_intervals": pl.Int64,
        "quantity": pl.Float64,
        "rate": pl.Float64,
        "amount": pl.Float64,
    }
    collected = pl.collect_all(
        [f.with_columns([pl.col(k).cast(v) for k, v in cast.items()]) for f in frames]
    )
    return (
        pl.concat(collected)
        if collected
        else pl.DataFrame(schema=dict.fromkeys(LINE_COLUMNS, pl.Utf8))
    )


def dated_parameters(obj: object, path: str = "") -> list[tuple[str, Dated]]:
    """Every dated parameter of a product as ``(dotted path, entries)``."""
    found: list[tuple[str, Dated]] = []
    if isinstance(obj, list) and obj and isinstance(obj[0], DatedEntry):
        return [(path, obj)]
    if isinstance(obj, list):
        for i, x in enumerate(obj):
            found += dated_parameters(x, f"{path}[{i}]")
    elif isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            found += dated_parameters(getattr(obj, name), f"{path}.{name}" if path else name)
    return found


def first_day_without(ctx: Context, days: list[date]) -> tuple[str, date] | None:
    """A (parameter, day) with no rate in force among ``days``, else ``None`` (checked up front)."""
    for path, entries in dated_parameters(ctx.product):
        if path.startswith("safe_harbour"):
            continue
        missing = first_missing_day(entries, days)
        if missing is not None:
            return path, missing
    return None


def span_days(segments: pl.DataFrame) -> list[date]:
    """Every distinct local day the segments cover (for up-front rate checks)."""
    if segments.height == 0:
        return []
    lo, hi = segments["start"].min(), segments["end"].max()
    assert isinstance(lo, date) and isinstance(hi, date)
    return [lo + timedelta(days=i) for i in range((hi - lo).days)]


def localise(ctx: Context, intervals: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
    """Intervals with their local clock attributes (see :mod:`tariffs.calendar`).

    The clock conversion runs once per distinct interval start (a month has ~1,500 of them, shared
    by every account) and is joined back, instead of once per account-interval.
    """
    lf = intervals.lazy()
    keys = with_local_attributes(lf.select("interval_start").unique(), ctx.timezone, ctx.holidays)
    return lf.join(keys, on="interval_start", how="left")


__all__ = ["Context", "MinimumCharge", "component_lines", "localise", "priced_intervals"]
