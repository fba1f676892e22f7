"""Parsers: one price file's lines -> candidate rows (:data:`CANDIDATE_SCHEMA`) and quarantine rows.

Formats (see ``data/formats/prices.md``):

- AEMO PRICE_AND_DEMAND CSV: ``REGION,SETTLEMENTDATE,TOTALDEMAND,RRP,PERIODTYPE``;
- the generic CSV ``region,interval_end,price_per_mwh[,interval_minutes]``;
- AEMO MMS C/I/D files: in :mod:`settlement.prices_mms`, with the helpers shared from here.

Everything is vectorised: a file is split into lines and fields by polars in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from settlement.prices_read import field as fld
from settlement.prices_rules import (
    CANDIDATE_SCHEMA,
    FILE,
    NEM_REGIONS,
    NEM_TZ,
    UTC_DT,
    Check,
    Frame,
    aemo_interval_minutes,
    infer_minutes,
    mark_checks,
    nem_to_utc,
    parse_aemo_time,
    quarantine_of,
)

OFFSET_RE = r"(Z|[+-]\d{2}:?\d{2})$"


@dataclass
class Parsed:
    """A parsed file: candidate price rows, rows quarantined so far, warnings, thresholds."""

    fmt: str
    candidates: pl.LazyFrame
    bad: pl.LazyFrame
    warnings: list[str] = field(default_factory=list)
    thresholds: pl.DataFrame | None = None
    grid_tz: str = NEM_TZ
    end_field: str = "SETTLEMENTDATE"
    price_field: str = "RRP"


def empty_candidates() -> pl.DataFrame:
    """A candidate frame with no rows."""
    return pl.DataFrame(schema=CANDIDATE_SCHEMA)


def candidates_of(df: Frame) -> Frame:
    have = df.collect_schema().names()
    return df.select(
        [
            pl.col(c).cast(t) if c in have else pl.lit(False, t).alias(c)
            for c, t in CANDIDATE_SCHEMA.items()
        ]
    )


def price_checks(region: str, end: str, price: str, known: tuple[str, ...]) -> list[Check]:
    """Region known, date parsed, price a finite number; the parse columns start with ``_``."""
    return [
        Check(
            region,
            ~pl.col("region").is_in(known),
            pl.format(
                "unknown region '{}' (expected one of {})",
                pl.col("region"),
                pl.lit(", ".join(known)),
            ),
        ),
        Check(
            end,
            pl.col("end_utc").is_null(),
            pl.format("not a valid date-time: '{}'", pl.col("_end_text")),
        ),
        Check(
            price,
            pl.col("price_per_mwh").is_null() | ~pl.col("price_per_mwh").is_finite(),
            pl.format("not a number: '{}'", pl.col("_price_text")),
        ),
    ]


def _split_once(df: pl.LazyFrame, checks: list[Check]) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Run the parse and the checks once (one materialised frame), then split it."""
    marked = mark_checks(df, checks).collect()
    good = marked.filter(pl.col("_check").is_null())
    bad = quarantine_of(marked, checks)
    return candidates_of(good).lazy(), bad.lazy()


def field_count_check(expected: int) -> Check:
    n = pl.col("_fields").list.len()
    return Check(
        None, n != expected, pl.format("expected {} fields, found {}", pl.lit(expected), n)
    )


def _body(lines: pl.DataFrame, header_line: int) -> pl.LazyFrame:
    return (
        lines.lazy()
        .filter((pl.col("source_line") > header_line) & (pl.col("raw").str.strip_chars() != ""))
        .with_columns(_fields=pl.col("raw").str.split(","), record_type=pl.lit("data"))
    )


# --- AEMO PRICE_AND_DEMAND -------------------------------------------------------------------


def parse_price_and_demand(lines: pl.DataFrame, header_line: int, header: list[str]) -> Parsed:
    """AEMO PRICE_AND_DEMAND: interval-ending NEM time; 30-minute to 2021-10-01 00:00, then 5."""
    idx = {name.upper(): i for i, name in enumerate(header)}
    f = pl.col("_fields")
    period = fld(f, idx["PERIODTYPE"]) if "PERIODTYPE" in idx else pl.lit("TRADE")
    df = _body(lines, header_line).with_columns(
        region=fld(f, idx["REGION"]),
        _end_text=fld(f, idx["SETTLEMENTDATE"]),
        _price_text=fld(f, idx["RRP"]),
        _period=period,
    )
    end_nem = parse_aemo_time(pl.col("_end_text"))
    df = df.with_columns(
        end_utc=nem_to_utc(end_nem),
        interval_minutes=aemo_interval_minutes(end_nem),
        price_per_mwh=pl.col("_price_text").cast(pl.Float64, strict=False),
        version_at=pl.lit(None, UTC_DT),
    )
    checks = [
        field_count_check(len(header)),
        *price_checks("REGION", "SETTLEMENTDATE", "RRP", NEM_REGIONS),
        Check(
            "PERIODTYPE",
            pl.col("_period").str.to_uppercase() != "TRADE",
            pl.format(
                "PERIODTYPE '{}' is not TRADE (only settled prices are loaded)", pl.col("_period")
            ),
        ),
    ]
    good, bad = _split_once(df, checks)
    return Parsed("aemo-price-and-demand", good, bad)


# --- generic CSV -----------------------------------------------------------------------------


def _with_generic_end_utc(df: pl.LazyFrame, timezone: str) -> pl.LazyFrame:
    """Add ``end_utc`` and ``_guessed`` from ``_end_text``: ISO-like local time (``T`` or space,
    ``-`` or ``/``, optional seconds and UTC offset).

    A time without offset is read in ``timezone``; during a fall-back hour the first occurrence of
    a local time (per file and region) is the earlier instant, the second the later; a local time
    that does not exist (spring-forward gap) gives null. ``_guessed`` marks repeated-hour times
    that appear only once (read as the earlier instant by convention). Computed in stages so each
    intermediate is evaluated once.
    """
    norm = (
        pl.col("_end_text")
        .str.replace("T", " ", literal=True)
        .str.replace_all("/", "-", literal=True)
    )
    df = df.with_columns(_norm=norm).with_columns(
        _offset=pl.col("_norm").str.extract(OFFSET_RE, 1),
        _local=pl.col("_norm").str.replace(OFFSET_RE, "").str.strip_chars(),
    )
    local = pl.col("_local")
    df = df.with_columns(
        _naive=pl.coalesce(
            local.str.strptime(pl.Datetime("us"), "%Y-%m-%d %H:%M:%S", strict=False),
            local.str.strptime(pl.Datetime("us"), "%Y-%m-%d %H:%M", strict=False),
        )
    )
    naive, offset = pl.col("_naive"), pl.col("_offset")
    off_minutes = (
        pl.when(offset == "Z")
        .then(pl.lit(0))
        .otherwise(
            (
                offset.str.slice(1, 2).cast(pl.Int64, strict=False) * 60
                + offset.str.slice(-2, 2).cast(pl.Int64, strict=False)
            )
            * pl.when(offset.str.starts_with("-")).then(-1).otherwise(1)
        )
    )
    df = df.with_columns(
        _with_offset=(naive - pl.duration(minutes=off_minutes)).dt.replace_time_zone("UTC"),
        _earliest=naive.dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null"),
        _latest=naive.dt.replace_time_zone(timezone, ambiguous="latest", non_existent="null"),
    ).with_columns(_repeated=(pl.col("_earliest") != pl.col("_latest")).fill_null(False))
    df = df.with_columns(_key=pl.when("_repeated").then(naive)).with_columns(
        _occurrence=pl.int_range(pl.len()).over(FILE, "region", "_key"),
        _count=pl.len().over(FILE, "region", "_key"),
    )
    in_zone = (
        pl.when(pl.col("_repeated") & (pl.col("_occurrence") > 0))
        .then(pl.col("_latest"))
        .otherwise(pl.col("_earliest"))
        .dt.convert_time_zone("UTC")
    )
    return df.with_columns(
        end_utc=pl.when(offset.is_not_null()).then(pl.col("_with_offset")).otherwise(in_zone),
        _guessed=offset.is_null() & pl.col("_repeated") & (pl.col("_count") == 1),
    ).drop(
        "_norm",
        "_offset",
        "_local",
        "_naive",
        "_with_offset",
        "_earliest",
        "_latest",
        "_repeated",
        "_key",
        "_occurrence",
        "_count",
    )


def parse_generic(
    lines: pl.DataFrame,
    header_line: int,
    header: list[str],
    timezone: str,
    regions: tuple[str, ...],
) -> Parsed:
    """The generic CSV ``region,interval_end,price_per_mwh[,interval_minutes]`` (any order)."""
    idx = {name.lower(): i for i, name in enumerate(header)}
    f = pl.col("_fields")
    minutes_text = fld(f, idx["interval_minutes"]) if "interval_minutes" in idx else pl.lit(None)
    df = _body(lines, header_line).with_columns(
        region=fld(f, idx["region"]),
        _end_text=fld(f, idx["interval_end"]),
        _price_text=fld(f, idx["price_per_mwh"]),
        _minutes_text=minutes_text.cast(pl.Utf8),
    )
    df = _with_generic_end_utc(df, timezone).with_columns(
        price_per_mwh=pl.col("_price_text").cast(pl.Float64, strict=False),
        interval_minutes=pl.col("_minutes_text").cast(pl.Int16, strict=False),
        version_at=pl.lit(None, UTC_DT),
    )
    df = infer_minutes(df)  # from every readable interval_end, before any row is set aside
    bad_minutes = pl.col("_minutes_text").fill_null("").str.len_chars() > 0
    checks = [
        field_count_check(len(header)),
        *price_checks("region", "interval_end", "price_per_mwh", regions),
        Check(
            "interval_minutes",
            bad_minutes & pl.col("_minutes_text").cast(pl.Int16, strict=False).is_null(),
            pl.format("not a whole number of minutes: '{}'", pl.col("_minutes_text")),
        ),
    ]
    good, bad = _split_once(df, checks)
    return Parsed(
        "generic-csv",
        good,
        bad,
        grid_tz=timezone,
        end_field="interval_end",
        price_field="price_per_mwh",
    )


def parse_lines(
    fmt: str,
    lines: pl.DataFrame,
    header_line: int,
    header: list[str],
    timezone: str,
    regions: tuple[str, ...],
) -> Parsed:
    """Parse the lines of one or more CSV files sharing one header (``_file`` tells them apart)."""
    if fmt == "aemo-price-and-demand":
        return parse_price_and_demand(lines, header_line, header)
    return parse_generic(lines, header_line, header, timezone, regions)
