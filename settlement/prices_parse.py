"""Parsers: one price file's lines -> candidate rows (:data:`CANDIDATE_SCHEMA`) and quarantine rows.

Formats (see ``data/formats/prices.md``):

- AEMO PRICE_AND_DEMAND CSV: ``REGION,SETTLEMENTDATE,TOTALDEMAND,RRP,PERIODTYPE``;
- AEMO MMS C/I/D files: DISPATCH.PRICE, TRADING.PRICE (prices) and MARKET_CONFIG.
  MARKET_PRICE_THRESHOLDS (cap/floor history), any number of I tables per file;
- the generic CSV ``region,interval_end,price_per_mwh[,interval_minutes]``.

Everything is vectorised: a file is split into lines and fields by polars in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from settlement.prices_read import (
    MMS_THRESHOLDS_TABLE,
    Sniffed,
    decode,
    first_line,
    lines_frame,
    read_bytes,
    split_header,
)
from settlement.prices_read import field as fld
from settlement.prices_rules import (
    CANDIDATE_SCHEMA,
    FILE,
    FIVE_MINUTE_SETTLEMENT_END_OF_30,
    NEM_REGIONS,
    NEM_TZ,
    UTC_DT,
    Check,
    Frame,
    aemo_interval_minutes,
    empty_quarantine,
    infer_minutes,
    mark_checks,
    nem_to_utc,
    parse_aemo_time,
    quarantine_of,
    split_checks,
)
from tariffs.errors import PriceFileError

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


def _candidates(df: Frame) -> Frame:
    have = df.collect_schema().names()
    return df.select(
        [
            pl.col(c).cast(t) if c in have else pl.lit(False, t).alias(c)
            for c, t in CANDIDATE_SCHEMA.items()
        ]
    )


def _price_checks(region: str, end: str, price: str, known: tuple[str, ...]) -> list[Check]:
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
    return _candidates(good).lazy(), bad.lazy()


def _field_count_check(expected: int) -> Check:
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
        _field_count_check(len(header)),
        *_price_checks("REGION", "SETTLEMENTDATE", "RRP", NEM_REGIONS),
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
        _field_count_check(len(header)),
        *_price_checks("region", "interval_end", "price_per_mwh", regions),
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


# --- AEMO MMS C/I/D --------------------------------------------------------------------------


def _require(
    path: Path, table: str, cols: dict[str, int], names: tuple[str, ...], line: int
) -> None:
    for name in names:
        if name not in cols:
            raise PriceFileError(path, f"MMS table {table} has no column {name}", line, name)


def _mms_prices(
    path: Path, table: str, d: pl.DataFrame, cols: dict[str, int], line: int
) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    """DISPATCH.PRICE or TRADING.PRICE D rows -> candidates (INTERVENTION = 0 only)."""
    _require(path, table, cols, ("SETTLEMENTDATE", "REGIONID", "RRP", "LASTCHANGED"), line)
    f = pl.col("_fields")
    d = d.with_columns(
        region=fld(f, cols["REGIONID"]),
        _end_text=fld(f, cols["SETTLEMENTDATE"]),
        _price_text=fld(f, cols["RRP"]),
        _changed_text=fld(f, cols["LASTCHANGED"]),
        _intervention=fld(f, cols["INTERVENTION"]) if "INTERVENTION" in cols else pl.lit("0"),
        _invalid=fld(f, cols["INVALIDFLAG"]) if "INVALIDFLAG" in cols else pl.lit("0"),
        _period=fld(f, cols["PERIODID"]).cast(pl.Int32, strict=False)
        if "PERIODID" in cols
        else pl.lit(None, pl.Int32),
    )
    warnings = []
    intervention = d.filter(pl.col("_intervention") == "1").height
    if intervention:
        warnings.append(
            f"excluded {intervention:,} {table} row(s) with INTERVENTION=1 "
            "(intervention pricing run; INTERVENTION=0 rows are the market prices)"
        )
    d = d.filter(pl.col("_intervention") != "1")
    end_nem = parse_aemo_time(pl.col("_end_text"))
    by_date = aemo_interval_minutes(end_nem)
    d = d.with_columns(
        end_utc=nem_to_utc(end_nem),
        interval_minutes=pl.lit(5, pl.Int16) if table == "DISPATCH.PRICE" else by_date,
        price_per_mwh=pl.col("_price_text").cast(pl.Float64, strict=False),
        version_at=nem_to_utc(parse_aemo_time(pl.col("_changed_text"))),
        _mod=(end_nem.dt.hour().cast(pl.Int32) * 60 + end_nem.dt.minute()).replace(0, 1440),
    )
    early = d.filter(end_nem <= FIVE_MINUTE_SETTLEMENT_END_OF_30).height
    if table == "DISPATCH.PRICE" and early:
        warnings.append(
            f"{early:,} DISPATCH.PRICE row(s) end before five-minute settlement (2021-10-01): "
            "5-minute dispatch prices, not the 30-minute trading prices settled then"
        )
    checks = [
        Check(
            "INTERVENTION",
            pl.col("_intervention") != "0",
            pl.format("INTERVENTION '{}' is neither 0 nor 1", pl.col("_intervention")),
        ),
        *_price_checks("REGIONID", "SETTLEMENTDATE", "RRP", NEM_REGIONS),
        Check(
            "LASTCHANGED",
            pl.col("version_at").is_null() & (pl.col("_changed_text") != ""),
            pl.format("not a valid date-time: '{}'", pl.col("_changed_text")),
        ),
        Check(
            "INVALIDFLAG",
            pl.col("_invalid").fill_null("0") != "0",
            pl.format("INVALIDFLAG '{}': AEMO marks this price invalid", pl.col("_invalid")),
        ),
    ]
    if "PERIODID" in cols:
        checks.append(
            Check(
                "PERIODID",
                pl.col("_period").is_null()
                | (pl.col("_period") * pl.col("interval_minutes") != pl.col("_mod")),
                pl.format(
                    "PERIODID {} does not match a {}-minute interval ending {} (NEM time)",
                    pl.col("_period"),
                    pl.col("interval_minutes"),
                    pl.col("_end_text"),
                ),
            )
        )
    good, bad = split_checks(d, checks)
    return _candidates(good), bad, warnings


def _mms_thresholds(
    path: Path, d: pl.DataFrame, cols: dict[str, int], line: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """MARKET_PRICE_THRESHOLDS D rows -> effective_from, cap (VOLL), floor, CPT, version."""
    table = MMS_THRESHOLDS_TABLE
    _require(path, table, cols, ("EFFECTIVEDATE", "VOLL", "MARKETPRICEFLOOR"), line)
    f = pl.col("_fields")

    def num(name: str) -> pl.Expr:
        if name not in cols:
            return pl.lit(None, pl.Float64)
        return fld(f, cols[name]).cast(pl.Float64, strict=False)

    d = d.with_columns(
        _date_text=fld(f, cols["EFFECTIVEDATE"]),
        effective_from=parse_aemo_time(fld(f, cols["EFFECTIVEDATE"])).dt.date(),
        version_no=fld(f, cols["VERSIONNO"]).cast(pl.Int64, strict=False)
        if "VERSIONNO" in cols
        else pl.lit(1, pl.Int64),
        market_price_cap=num("VOLL"),
        market_price_floor=num("MARKETPRICEFLOOR"),
        cumulative_price_threshold=num("ADMINISTERED_PRICE_THRESHOLD"),
    )
    checks = [
        Check(
            "EFFECTIVEDATE",
            pl.col("effective_from").is_null(),
            pl.format("not a valid date-time: '{}'", pl.col("_date_text")),
        ),
        Check("VOLL", pl.col("market_price_cap").is_null(), pl.lit("VOLL is not a number")),
        Check(
            "MARKETPRICEFLOOR",
            pl.col("market_price_floor").is_null(),
            pl.lit("MARKETPRICEFLOOR is not a number"),
        ),
    ]
    good, bad = split_checks(d, checks)
    latest = (
        good.sort("effective_from", "version_no", "source_line")
        .group_by("effective_from", maintain_order=True)
        .last()
        .select(
            "effective_from",
            "market_price_cap",
            "market_price_floor",
            "cumulative_price_threshold",
            "source_line",
        )
    )
    return latest, bad


def _footer_warning(body: pl.DataFrame) -> list[str]:
    footer = body.filter(pl.col("_kind") == "C").tail(1)
    text = footer["raw"].item() if footer.height else ""
    if "END OF REPORT" not in text.upper():
        return ['no C,"END OF REPORT" footer: the file may be truncated']
    count = split_header(text)[-1]
    if count.isdigit() and int(count) != body.height:
        return [
            f"footer counts {int(count):,} records but this copy holds {body.height:,} "
            "(a filtered or truncated file?)"
        ]
    return []


def parse_mms(path: Path, lines: pl.DataFrame) -> Parsed:
    """An MMS C/I/D file: each I record starts a table whose D records follow it."""
    body = lines.filter(pl.col("raw").str.strip_chars() != "").with_columns(
        _fields=pl.col("raw").str.split(","),
    )
    body = body.with_columns(_kind=fld(pl.col("_fields"), 0).str.to_uppercase())
    body = body.with_columns(
        _block=(pl.col("_kind") == "I").cast(pl.Int32).cum_sum(),
        _table=fld(pl.col("_fields"), 1).str.to_uppercase()
        + "."
        + fld(pl.col("_fields"), 2).str.to_uppercase(),
        record_type=pl.col("_kind"),
    )
    heads = body.filter(pl.col("_kind") == "I")
    cands, bads, warnings = [empty_candidates()], [empty_quarantine()], _footer_warning(body)
    thresholds = None
    tables = []
    for block, table, line, raw in heads.select("_block", "_table", "source_line", "raw").rows():
        names = [n.upper() for n in split_header(raw)]
        cols = {name: i for i, name in enumerate(names) if i >= 4}
        d = body.filter((pl.col("_block") == block) & (pl.col("_kind") == "D"))
        _, wrong = split_checks(
            d,
            [
                _field_count_check(len(names)),
                Check(
                    "table",
                    pl.col("_table") != table,
                    pl.format(
                        "D record of table {} under the I record of {} (line {})",
                        pl.col("_table"),
                        pl.lit(table),
                        pl.lit(line),
                    ),
                ),
            ],
        )
        bads.append(wrong)
        d = d.filter(~pl.col("source_line").is_in(wrong["source_line"].implode()))
        if table in ("DISPATCH.PRICE", "TRADING.PRICE"):
            c, b, w = _mms_prices(path, table, d, cols, line)
            cands.append(c)
            bads.append(b)
            warnings += w
            tables.append(table.replace(".", "").lower())
        elif table == MMS_THRESHOLDS_TABLE:
            thresholds, b = _mms_thresholds(path, d, cols, line)
            bads.append(b)
            tables.append("market-price-thresholds")
        else:
            warnings.append(f"ignored {d.height:,} row(s) of MMS table {table} (not a price table)")
    if not tables:
        found = ", ".join(heads["_table"].to_list()) or "no I records"
        raise PriceFileError(
            path,
            f"MMS file holds no DISPATCH.PRICE, TRADING.PRICE or MARKET_PRICE_THRESHOLDS "
            f"table (found {found})",
            field="I",
        )
    orphans = body.filter(
        ~pl.col("_kind").is_in(["C", "I", "D"])
        | ((pl.col("_kind") == "D") & (pl.col("_block") == 0))
    )
    _, orphan_bad = split_checks(
        orphans,
        [
            Check(
                None,
                pl.lit(True),
                pl.format(
                    "record type '{}' outside the C/I/D layout (or D before any I)", pl.col("_kind")
                ),
            )
        ],
    )
    bads.append(orphan_bad)
    return Parsed(
        "aemo-mms-" + "+".join(dict.fromkeys(tables)),
        pl.concat(cands).lazy(),
        pl.concat(bads, how="vertical_relaxed").lazy(),
        warnings,
        thresholds,
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


def parse_file(sniffed: Sniffed, timezone: str, regions: tuple[str, ...]) -> Parsed:
    """Read and parse the whole of a sniffed file (no store access)."""
    text = decode(read_bytes(sniffed.path))
    lines = lines_frame(text)
    if sniffed.fmt == "aemo-mms":
        return parse_mms(sniffed.path, lines)
    header_line, header_text = first_line(text)
    return parse_lines(
        sniffed.fmt, lines, header_line, split_header(header_text), timezone, regions
    )
