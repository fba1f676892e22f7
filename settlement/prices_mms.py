"""AEMO MMS C/I/D files: DISPATCH.PRICE, TRADING.PRICE and MARKET_CONFIG.MARKET_PRICE_THRESHOLDS.

``C`` records are comments (header and ``END OF REPORT`` footer), an ``I`` record names the columns
of the ``D`` records that follow it; a file may hold several tables. Only ``INTERVENTION = 0``
prices load; ``version_at`` is ``LASTCHANGED`` (NEM time). See ``data/formats/prices.md``.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from settlement.prices_parse import (
    Parsed,
    candidates_of,
    empty_candidates,
    field_count_check,
    price_checks,
)
from settlement.prices_read import MMS_THRESHOLDS_TABLE, split_header
from settlement.prices_read import field as fld
from settlement.prices_rules import (
    FIVE_MINUTE_SETTLEMENT_END_OF_30,
    NEM_REGIONS,
    Check,
    aemo_interval_minutes,
    empty_quarantine,
    nem_to_utc,
    parse_aemo_time,
    split_checks,
)
from tariffs.errors import PriceFileError


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
        *price_checks("REGIONID", "SETTLEMENTDATE", "RRP", NEM_REGIONS),
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
    return candidates_of(good), bad, warnings


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
                field_count_check(len(names)),
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
