"""Checks every price row passes, whatever its format: interval length, spacing, floor and cap.

Each parser turns its file into *candidate* rows (:data:`CANDIDATE_SCHEMA`): region, interval end in
UTC, interval length (``None`` = infer from spacing), price and version. :func:`finish_rows` then
derives ``interval_start``, checks the spacing and the market price floor/cap, and splits good rows
from quarantined ones. All of it is vectorised polars; a check that fails names the line and field.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import polars as pl

from settlement.ingest_common import QUARANTINE_SCHEMA

Frame = TypeVar("Frame", pl.DataFrame, pl.LazyFrame)

NEM_TZ = "Etc/GMT-10"
"""NEM market time: UTC+10 all year (the IANA ``Etc/GMT-10`` zone; the sign is POSIX-inverted)."""

NEM_REGIONS: tuple[str, ...] = ("NSW1", "QLD1", "SA1", "TAS1", "VIC1")

FIVE_MINUTE_SETTLEMENT_END_OF_30 = dt.datetime(2021, 10, 1, 0, 0)
"""NEM time of the last 30-minute interval end: AEMO rows ending at or before it are 30-minute
trading intervals, later rows are 5-minute (five-minute settlement began 2021-10-01)."""

AEMO_DATE_FORMAT = "%Y/%m/%d %H:%M:%S"
UTC_DT = pl.Datetime("us", "UTC")

FILE = "_file"
"""Column numbering the files of a chunk parsed together (0 for a single file)."""

CANDIDATE_SCHEMA: dict[str, pl.DataType] = {
    FILE: pl.Int32(),
    "source_line": pl.Int32(),
    "raw": pl.Utf8(),
    "record_type": pl.Utf8(),
    "region": pl.Utf8(),
    "end_utc": UTC_DT,
    "interval_minutes": pl.Int16(),
    "price_per_mwh": pl.Float64(),
    "version_at": UTC_DT,
    "_guessed": pl.Boolean(),  # generic CSV: a repeated-hour local time seen once (see parser)
}
ROW_COLUMNS = (
    "region",
    "interval_start",
    "interval_minutes",
    "price_per_mwh",
    "version_at",
    "source_line",
)


@dataclass(frozen=True)
class Check:
    """One row rule: ``field`` (or ``None``), a boolean ``is_bad`` expression, the ``reason``."""

    field: str | None
    is_bad: pl.Expr
    reason: pl.Expr


@dataclass
class Checked:
    """Rows that passed, rows quarantined (:data:`QUARANTINE_SCHEMA`) and file-level warnings."""

    good: pl.DataFrame
    bad: pl.DataFrame
    warnings: list[str] = field(default_factory=list)
    repeats: int = 0  # good rows whose interval an earlier good row of the file already gave


BAD_SCHEMA: dict[str, pl.DataType] = {
    FILE: pl.Int32(),
    **{k: v() if isinstance(v, type) else v for k, v in QUARANTINE_SCHEMA.items()},
}


def empty_quarantine() -> pl.DataFrame:
    """A quarantine frame (:data:`QUARANTINE_SCHEMA` plus the file number) with no rows."""
    return pl.DataFrame(schema=BAD_SCHEMA)


def mark_checks(df: Frame, checks: Sequence[Check]) -> Frame:
    """Add ``_check``: the index of the first failing check of each row (null when all pass).

    Only the boolean conditions are evaluated here, for every row; reasons are formatted later
    for the failing rows alone (:func:`quarantine_of`). A check whose ``is_bad`` is null for a row
    does not fire (write checks so that earlier ones catch the nulls).
    """
    if not checks:
        return df.with_columns(_check=pl.lit(None, pl.Int16))
    index = pl.coalesce([pl.when(c.is_bad).then(pl.lit(i, pl.Int16)) for i, c in enumerate(checks)])
    return df.with_columns(_check=index)


def quarantine_of(marked: Frame, checks: Sequence[Check]) -> Frame:
    """The rows of a :func:`mark_checks` frame that failed, as quarantine records."""
    bad = marked.filter(pl.col("_check").is_not_null())
    if not checks:
        return bad.select(BAD_SCHEMA.keys())
    which = pl.col("_check")
    fld = pl.coalesce(
        [pl.when(which == i).then(pl.lit(c.field, pl.Utf8)) for i, c in enumerate(checks)]
    )
    why = pl.coalesce([pl.when(which == i).then(c.reason) for i, c in enumerate(checks)])
    return bad.select(
        pl.col(FILE).cast(pl.Int32),
        pl.col("source_line").cast(pl.Int32),
        pl.col("record_type").cast(pl.Utf8),
        fld.alias("field"),
        why.alias("reason"),
        pl.col("raw").cast(pl.Utf8),
    )


def split_checks(df: Frame, checks: Sequence[Check]) -> tuple[Frame, Frame]:
    """Split ``df`` into rows passing every check and quarantine rows (first failing check wins).

    ``df`` (eager or lazy) needs ``source_line``, ``record_type`` and ``raw`` columns.
    """
    marked = mark_checks(df, checks)
    good = marked.filter(pl.col("_check").is_null()).drop("_check")
    return good, quarantine_of(marked, checks)


def aemo_interval_minutes(end_nem: pl.Expr) -> pl.Expr:
    """Interval length of an AEMO interval-ending NEM timestamp: 30 up to 2021-10-01 00:00, then 5."""
    return (
        pl.when(end_nem <= FIVE_MINUTE_SETTLEMENT_END_OF_30)
        .then(pl.lit(30, pl.Int16))
        .otherwise(pl.lit(5, pl.Int16))
    )


def nem_to_utc(naive_nem: pl.Expr) -> pl.Expr:
    """A naive NEM-time datetime as a UTC instant."""
    return naive_nem.dt.replace_time_zone(NEM_TZ).dt.convert_time_zone("UTC")


def parse_aemo_time(text: pl.Expr) -> pl.Expr:
    """``YYYY/MM/DD HH:MM:SS`` NEM time -> naive datetime (null when it does not parse)."""
    return text.str.strptime(pl.Datetime("us"), AEMO_DATE_FORMAT, strict=False)


def financial_year_expr(day: pl.Expr) -> pl.Expr:
    """Australian financial year (1 July - 30 June) named by its ending year: 2024-01-01 -> 2024."""
    return day.dt.offset_by("6mo").dt.year()


def financial_year(day: dt.date) -> int:
    """Financial year of a market-time date, named by its ending year (FY24 = 2023-07-01..2024-06-30)."""
    return int(pl.select(financial_year_expr(pl.lit(day, pl.Date))).item())


def infer_minutes(lf: pl.LazyFrame) -> pl.LazyFrame:
    """Fill a null ``interval_minutes`` with its region's most common spacing (whole minutes).

    Uses every row with a readable ``end_utc`` (also rows bad in another field, so that a bad
    row cannot change the length of its good neighbours). Needs ``_file`` and ``region``.
    """
    spacing = (
        lf.filter(pl.col("end_utc").is_not_null())
        .select(FILE, "region", "end_utc")
        .unique()
        .sort(FILE, "region", "end_utc")
        .with_columns(step=pl.col("end_utc").diff().over(FILE, "region").dt.total_minutes())
        .filter(
            (pl.col("step") > 0) & (pl.col("step") <= 1440)
        )  # a day at most: gaps are not lengths
        .group_by(FILE, "region")
        .agg(pl.col("step").mode().min().cast(pl.Int16).alias("_inferred"))
    )
    return (
        lf.join(spacing, on=[FILE, "region"], how="left")
        .with_columns(interval_minutes=pl.coalesce("interval_minutes", "_inferred"))
        .drop("_inferred")
    )


def _length_checks(grid_tz: str, end_field: str) -> list[Check]:
    """Interval length known and a divisor of a day; interval end on its grid in ``grid_tz``."""
    minutes = pl.col("interval_minutes")
    end_local = pl.col("end_utc").dt.convert_time_zone(grid_tz)
    minute_of_day = end_local.dt.hour().cast(pl.Int32) * 60 + end_local.dt.minute()
    checks = [
        Check(
            "interval_minutes",
            minutes.is_null(),
            pl.lit(
                "cannot infer the interval length from a single interval in this region; "
                "add an interval_minutes column"
            ),
        ),
        Check(
            "interval_minutes",
            (minutes <= 0) | (1440 % minutes.cast(pl.Int32) != 0),
            pl.format("interval length {} minutes does not divide a day", minutes),
        ),
        Check(
            end_field,
            (minute_of_day % minutes.cast(pl.Int32) != 0) | (end_local.dt.second() != 0),
            pl.format(
                "interval end {} ({}) is not on the {}-minute grid of its period",
                end_local.dt.strftime("%Y-%m-%d %H:%M:%S"),
                pl.lit(grid_tz),
                minutes,
            ),
        ),
    ]
    return checks


def _spacing_check(end_field: str) -> Check:
    """Within a region, consecutive interval ends must be a whole number of intervals apart."""
    m = pl.col("interval_minutes").cast(pl.Int64)
    step = pl.col("_step")
    return Check(
        end_field,
        (step > 0) & ((step < m) | (step % m != 0)),
        pl.format(
            "interval ending {} UTC is {} minutes after the one on line {} in region {}: not a "
            "whole number of {}-minute intervals (overlap or wrong interval length)",
            pl.col("end_utc").dt.strftime("%Y-%m-%d %H:%M"),
            step,
            pl.col("_prev_line"),
            pl.col("region"),
            pl.col("interval_minutes"),
        ),
    )


def _threshold_checks(price_field: str) -> list[Check]:
    """NEM prices must lie within [floor, cap] of the thresholds in force on their market day."""
    price = pl.col("price_per_mwh")
    return [
        Check(
            price_field,
            pl.col("_nem") & (price > pl.col("market_price_cap")),
            pl.format(
                "price {} $/MWh is above the market price cap {} in force on {} (FY{})",
                price,
                pl.col("market_price_cap"),
                pl.col("_day"),
                financial_year_expr(pl.col("_day")),
            ),
        ),
        Check(
            price_field,
            pl.col("_nem") & (price < pl.col("market_price_floor")),
            pl.format(
                "price {} $/MWh is below the market price floor {} in force on {}",
                price,
                pl.col("market_price_floor"),
                pl.col("_day"),
            ),
        ),
    ]


def _with_spacing(lf: pl.LazyFrame, length_checks: Sequence[Check]) -> pl.LazyFrame:
    """Add ``_step``: minutes since the previous good interval end of the same series.

    A series is one region at one interval length (5-minute dispatch and 30-minute trading
    prices of a region are separate series). ``_prev_line`` names the previous row's line.
    """
    ok = ~pl.any_horizontal([c.is_bad.fill_null(False) for c in length_checks])
    series = [FILE, "region", "interval_minutes"]

    def previous(col: str) -> pl.Expr:
        return pl.when("_len_ok").then(pl.col(col)).shift(1).forward_fill().over(series)

    return (
        lf.with_columns(_len_ok=ok)
        .sort(FILE, "region", "interval_minutes", "end_utc", "source_line")
        .with_columns(_prev_end=previous("end_utc"), _prev_line=previous("source_line"))
        .with_columns(_step=(pl.col("end_utc") - pl.col("_prev_end")).dt.total_minutes())
    )


def _with_thresholds(lf: pl.LazyFrame, thresholds: pl.DataFrame) -> pl.LazyFrame:
    """Add the cap and floor in force on each row's NEM market day (null when none is).

    The entry in force is found by binary search of the (few, sorted) ``effective_from`` dates,
    so the rows need no sorting.
    """
    limits = thresholds.sort("effective_from")
    if limits.height == 0:
        return lf.with_columns(
            _day=pl.lit(None, pl.Date),
            market_price_cap=pl.lit(None, pl.Float64),
            market_price_floor=pl.lit(None, pl.Float64),
            _nem=pl.col("region").is_in(NEM_REGIONS),
        )
    day = pl.col("interval_start").dt.convert_time_zone(NEM_TZ).dt.date()
    position = pl.lit(limits["effective_from"]).search_sorted(pl.col("_day"), side="right")
    index = position.cast(pl.Int64) - 1  # the last entry starting on or before the day
    found = pl.col("_day").is_not_null() & (index >= 0)

    def limit(name: str) -> pl.Expr:
        return pl.when(found).then(pl.lit(limits[name]).gather(index.clip(0, limits.height - 1)))

    return (
        lf.with_columns(_day=day)
        .with_columns(
            market_price_cap=limit("market_price_cap"),
            market_price_floor=limit("market_price_floor"),
            _to=limit("effective_to"),
        )
        .with_columns(
            [
                pl.when(pl.col("_to").is_not_null() & (pl.col("_day") >= pl.col("_to")))
                .then(None)
                .otherwise(pl.col(c))
                .alias(c)
                for c in ("market_price_cap", "market_price_floor")
            ]
        )
        .with_columns(_nem=pl.col("region").is_in(NEM_REGIONS))
    )


def _warnings(stats: dict[str, object]) -> list[str]:
    out = []
    if stats["gaps"]:
        out.append(f"{stats['gaps']:,} gap(s) between consecutive intervals (missing prices)")
    if stats["repeats"]:
        out.append(
            f"{stats['repeats']:,} row(s) repeat an interval given earlier in the file "
            "(identical ones are duplicates; otherwise the later line is the current price)"
        )
    if stats.get("guessed"):
        out.append(
            f"{stats['guessed']:,} row(s) fall in a repeated local hour (clocks went back) and "
            "appear once: read as the first pass of that hour; write UTC offsets to be sure"
        )
    if stats["unchecked"]:
        out.append(
            f"{stats['unchecked']:,} NEM row(s) (first market day {stats['first_unchecked']}) "
            "have no market_price_thresholds entry in force: floor and cap not checked (ingest "
            "an MMS MARKET_PRICE_THRESHOLDS archive first)"
        )
    others = stats["others"]
    if isinstance(others, list) and others:
        out.append(
            f"no market price thresholds for non-NEM region(s) {', '.join(others)}: "
            "floor and cap not checked"
        )
    return out


def finish_files(
    candidates: pl.LazyFrame,
    parse_bad: pl.LazyFrame,
    thresholds: pl.DataFrame,
    *,
    grid_tz: str,
    end_field: str,
    price_field: str,
) -> dict[int, Checked]:
    """Derive ``interval_start`` and run the length, spacing and floor/cap checks.

    ``candidates`` follows :data:`CANDIDATE_SCHEMA` and may hold several files (column ``_file``;
    every window is per file); ``parse_bad`` are the parser's quarantine rows; ``thresholds`` is
    :func:`~settlement.prices_store.market_thresholds` output. Interval ends must lie on the grid
    of their length in ``grid_tz`` (NEM time for AEMO files); a null length (one the parser could
    not infer) is quarantined. Returns, per file number, the good rows
    (:data:`ROW_COLUMNS`, in no particular order), its quarantine rows and its warnings.
    """
    texts = candidates.select(FILE, "source_line", "raw", "record_type")
    lf = candidates.drop("raw", "record_type")  # carried to the bad rows only, by join
    length_checks = _length_checks(grid_tz, end_field)
    lf = lf.with_columns(
        interval_start=pl.col("end_utc")
        - pl.duration(minutes=pl.col("interval_minutes").cast(pl.Int64))
    )
    lf = _with_thresholds(_with_spacing(lf, length_checks), thresholds)
    checks = [*length_checks, _spacing_check(end_field), *_threshold_checks(price_field)]
    marked, parse_bad_rows = pl.collect_all([mark_checks(lf, checks), parse_bad])
    passed = marked.filter(pl.col("_check").is_null())
    nem_unchecked = pl.col("_nem") & pl.col("market_price_cap").is_null()
    summary = passed.group_by(FILE).agg(
        gaps=(pl.col("_step") > pl.col("interval_minutes")).sum(),
        repeats=(pl.col("_step") == 0).sum(),
        guessed=pl.col("_guessed").sum(),
        unchecked=nem_unchecked.sum(),
        first_unchecked=pl.col("_day").filter(nem_unchecked).min(),
        others=pl.col("region").filter(~pl.col("_nem")).unique().sort(),
    )
    good = passed.select(FILE, *ROW_COLUMNS)
    failed = marked.filter(pl.col("_check").is_not_null())
    if failed.height:
        failed = failed.join(texts.collect(), on=[FILE, "source_line"], how="left")
    else:
        failed = failed.with_columns(raw=pl.lit(None, pl.Utf8), record_type=pl.lit(None, pl.Utf8))
    bad = pl.concat([parse_bad_rows, quarantine_of(failed, checks)], how="vertical_relaxed")
    goods = good.partition_by(FILE, as_dict=True, include_key=False)
    bads = bad.partition_by(FILE, as_dict=True)
    files = set(marked[FILE].unique().to_list()) | set(parse_bad_rows[FILE].unique().to_list())
    stats = {r[FILE]: r for r in summary.iter_rows(named=True)}
    out = {}
    for f in files:
        st = stats.get(f)
        out[f] = Checked(
            goods.get((f,), good.clear().drop(FILE)),
            bads.get((f,), empty_quarantine()),
            _warnings(st) if st else [],
            int(st["repeats"] or 0) if st else 0,
        )
    return out


def finish_rows(
    candidates: pl.LazyFrame,
    parse_bad: pl.LazyFrame,
    thresholds: pl.DataFrame,
    *,
    grid_tz: str,
    end_field: str,
    price_field: str,
) -> Checked:
    """:func:`finish_files` for a single file (its rows all carry ``_file`` 0)."""
    checked = finish_files(
        candidates,
        parse_bad,
        thresholds,
        grid_tz=grid_tz,
        end_field=end_field,
        price_field=price_field,
    )
    empty = pl.DataFrame(schema={c: CANDIDATE_SCHEMA.get(c, UTC_DT) for c in ROW_COLUMNS})
    return checked.get(0, Checked(empty, empty_quarantine()))
