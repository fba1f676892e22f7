"""Vectorised NEM12 parsing: one chunk of lines in, good readings and quarantined records out.

Internal to :mod:`settlement.nem12` (which owns files, chunking and the store). A chunk is a run of
whole lines that never splits a 300 record from its 400 records; the 200 record in force at the
start of a chunk is carried in :class:`StreamState` and re-read as a context line. Every step is a
polars expression over all lines of the chunk (and over all readings once the 300 records are
exploded): there is no Python loop per line or per reading.

The rules (quarantine reasons, the version_at fallback, the time conversion) are documented in
``data/formats/nem12.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import polars as pl

MINUTES_PER_DAY = 1440
MARKET_OFFSET = pl.duration(hours=10)
"""NEM market time is UTC+10 all year: UTC = market - 10 h."""
EPOCH = datetime(1970, 1, 1)
"""version_at of a record with no UpdateDateTime, MSATSLoadDateTime or header DateTime."""
INTERVAL_LENGTHS = (1, 5, 10, 15, 30)
QUALITY_RE = r"^[AEFNSV][0-9]{0,2}$"
"""A NEM12 QualityMethod: the flag letter and an optional two-digit method code."""
ENERGY_UNITS = ("wh", "kwh", "mwh")

QUARANTINE_COLUMNS = ("source_line", "record_type", "field", "reason", "raw")
READ_COLUMNS = (
    "nmi",
    "suffix",
    "interval_start",
    "interval_minutes",
    "kwh",
    "quality",
    "method",
    "reason",
    "version_at",
    "source_line",
)


class FileRejected(Exception):
    """The whole file is refused (NEM13, not NEM12, empty): one quarantine row, nothing loaded."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class StreamState:
    """What one NEM12 stream (a .csv, or one zip member) carries from chunk to chunk."""

    last_200: tuple[int, str] | None = None
    header_dt: datetime | None = None
    first_record: str | None = None
    n_100: int = 0
    n_200: int = 0
    n_300: int = 0
    n_900: int = 0
    n_500: int = 0
    skipped: dict[tuple[str, str, str], int] = field(default_factory=dict)


RECORD_COLUMNS = (
    "source_line",
    "nmi",
    "suffix",
    "day_no",
    "interval_minutes",
    "quality",
    "method",
    "reason",
    "version_at",
)
VALUE_COLUMNS = ("rec", "interval_start", "kwh", "flag_quality", "flag_method", "flag_reason")


@dataclass
class ChunkResult:
    """The loaded 300 records, their readings, and the quarantine rows of one chunk.

    ``records`` (:data:`RECORD_COLUMNS`) has one row per good energy 300 record: what is
    constant over the record's day (``day_no`` = market day as days since 1970-01-01; quality,
    method and reason as the 300 record states them). ``values`` (:data:`VALUE_COLUMNS`) has one
    row per reading: ``rec`` is the row of its record in ``records``; the ``flag_*`` columns hold
    the per-interval quality, method and reason of V days (from their 400 records) and are null
    elsewhere. Per reading only numbers are carried; :meth:`reads` widens on demand.
    """

    records: pl.DataFrame
    values: pl.DataFrame
    bad: pl.DataFrame

    def reads(self) -> pl.DataFrame:
        """One row per reading with the columns :data:`READ_COLUMNS` (flags resolved)."""
        per = {c: self.records[c].gather(self.values["rec"]) for c in RECORD_COLUMNS}
        flagged = pl.col("flag_quality").is_not_null()
        return self.values.with_columns(**per).select(
            "nmi",
            "suffix",
            "interval_start",
            "interval_minutes",
            "kwh",
            pl.coalesce("flag_quality", "quality").alias("quality"),
            pl.when(flagged)
            .then(pl.col("flag_method"))
            .otherwise(pl.col("method"))
            .alias("method"),
            pl.when(flagged)
            .then(pl.col("flag_reason"))
            .otherwise(pl.col("reason"))
            .alias("reason"),
            "version_at",
            "source_line",
        )


def _fmt_reason(*parts: pl.Expr | str) -> pl.Expr:
    return pl.concat_str([p if isinstance(p, pl.Expr) else pl.lit(p) for p in parts])


def _first_error(checks: list[tuple[pl.Expr, str, pl.Expr]]) -> tuple[pl.Expr, pl.Expr]:
    """(field, reason) of the first failing check: ``(failed, field name, reason)`` triples."""
    fld: pl.Expr = pl.lit(None, pl.Utf8)
    why: pl.Expr = pl.lit(None, pl.Utf8)
    for failed, name, reason in reversed(checks):
        fld = pl.when(failed).then(pl.lit(name)).otherwise(fld)
        why = pl.when(failed).then(reason).otherwise(why)
    return fld, why


def _f(i: int | pl.Expr) -> pl.Expr:
    """Field ``i`` (0-based) of the split line, null when absent."""
    return pl.col("f").list.get(i, null_on_oob=True)


def _q(e: pl.Expr) -> pl.Expr:
    """A field value quoted for a reason text (``'...'``, ``<missing>`` when null)."""
    return pl.concat_str([pl.lit("'"), e, pl.lit("'")]).fill_null("<missing>")


def _to_date(e: pl.Expr) -> pl.Expr:
    ok = e.str.contains(r"^[0-9]{8}$").fill_null(False)
    return pl.when(ok).then(e.str.to_date("%Y%m%d", strict=False))


def _to_datetime(e: pl.Expr) -> pl.Expr:
    """DateTime14 (YYYYMMDDhhmmss) or DateTime12 (YYYYMMDDhhmm), naive market time."""
    return (
        pl.when(e.str.contains(r"^[0-9]{14}$").fill_null(False))
        .then(e.str.to_datetime("%Y%m%d%H%M%S", strict=False, time_unit="us"))
        .when(e.str.contains(r"^[0-9]{12}$").fill_null(False))
        .then(e.str.to_datetime("%Y%m%d%H%M", strict=False, time_unit="us"))
    )


def split_lines(text: str, first_line: int, state: StreamState) -> pl.DataFrame:
    """Lines of a chunk as (line_no, text, rec, ctx); blank lines dropped, context 200 prepended."""
    lines = (
        pl.DataFrame({"text": pl.Series([text]).str.split("\n").explode(empty_as_null=True)})
        .with_row_index("line_no", offset=first_line)
        .with_columns(
            pl.col("line_no").cast(pl.Int64),
            pl.col("text").str.strip_chars_start("\ufeff").str.strip_chars_end(),
            pl.lit(False).alias("ctx"),
        )
        .filter(~pl.col("text").str.contains(r"^[\s,]*$"))
    )
    if state.last_200 is not None:
        ctx = pl.DataFrame(
            {"line_no": [state.last_200[0]], "text": [state.last_200[1]], "ctx": [True]},
            schema={"line_no": pl.Int64, "text": pl.Utf8, "ctx": pl.Boolean},
        )
        lines = pl.concat([ctx, lines.select("line_no", "text", "ctx")])
    return lines.with_columns(
        pl.col("text").str.extract(r"^\s*([^,]*)", 1).str.strip_chars().alias("rec")
    )


def check_stream_records(lines: pl.DataFrame, state: StreamState) -> list[str]:
    """Whole-file checks on the few 100/250/550/900 lines; update ``state``; return warnings."""
    warnings: list[str] = []
    nem13 = lines.filter(pl.col("rec").is_in(["250", "550"]))
    if nem13.height:
        ln = nem13["line_no"][0]
        raise FileRejected(
            f"NEM13 accumulation (basic meter) data is not supported: record "
            f"{nem13['rec'][0]!r} at line {ln}; fairshare ingests NEM12 interval data only"
        )
    real = lines.filter(~pl.col("ctx"))
    if state.first_record is None and real.height:
        state.first_record = str(real["rec"][0])
    for ln, text in real.filter(pl.col("rec") == "100").select("line_no", "text").iter_rows():
        parts = [p.strip() for p in text.split(",")]
        version = parts[1] if len(parts) > 1 else ""
        if version.upper() == "NEM13":
            raise FileRejected(
                f"NEM13 file (100 header at line {ln} says {version!r}): NEM13 accumulation "
                "data is not supported; fairshare ingests NEM12 interval data only"
            )
        if version.upper() != "NEM12":
            raise FileRejected(
                f"not a NEM12 file: the 100 header at line {ln} has version {version!r} "
                "(expected 'NEM12')"
            )
        state.n_100 += 1
    counts = real.group_by("rec").len()
    by = dict(zip(counts["rec"].to_list(), counts["len"].to_list(), strict=True))
    state.n_200 += by.get("200", 0)
    state.n_300 += by.get("300", 0)
    state.n_500 += by.get("500", 0)
    state.n_900 += by.get("900", 0)
    return warnings


def header_datetimes(lines: pl.DataFrame, state: StreamState) -> pl.DataFrame:
    """Add ``header_dt``: the DateTime of the latest 100 record at or before each line."""
    text_f2 = pl.col("text").str.split(",").list.get(2, null_on_oob=True).str.strip_chars()
    lines = lines.with_columns(
        pl.when(pl.col("rec") == "100")
        .then(_to_datetime(text_f2))
        .forward_fill()
        .fill_null(pl.lit(state.header_dt, pl.Datetime("us")))
        .alias("header_dt")
    )
    if lines.height:
        last = lines["header_dt"][-1]
        state.header_dt = last if last is not None else state.header_dt
    return lines


def parse_chunk(text: str, first_line: int, state: StreamState) -> tuple[ChunkResult, list[str]]:
    """Parse one chunk of whole lines (line numbers from ``first_line``)."""
    lines = split_lines(text, first_line, state)
    warnings = check_stream_records(lines, state)
    lines = header_datetimes(lines, state)
    resets = pl.col("rec").is_in(["100", "900"])
    lines = lines.with_columns(
        pl.when(pl.col("rec") == "200")
        .then(pl.col("line_no"))
        .when(resets)
        .then(pl.lit(-1, pl.Int64))
        .forward_fill()
        .alias("blk"),
        pl.when(pl.col("rec") == "300")
        .then(pl.col("line_no"))
        .when(resets | (pl.col("rec") == "200"))
        .then(pl.lit(-1, pl.Int64))
        .forward_fill()
        .alias("own"),
    ).with_columns(
        pl.when(pl.col("blk") >= 0).then(pl.col("blk")).alias("blk"),
        pl.when(pl.col("own") >= 0).then(pl.col("own")).alias("own"),
    )
    _carry_block(lines, state)

    blocks = parse_200(lines.filter(pl.col("rec") == "200"))
    r300 = parse_300(lines.filter(pl.col("rec") == "300"), blocks)
    r400 = parse_400(lines.filter(pl.col("rec") == "400"), r300)
    r300 = check_coverage(r300, r400)
    r400 = r400.join(
        r300.select(pl.col("line_no").alias("own"), pl.col("err_reason").alias("own_err")),
        on="own",
        how="left",
        maintain_order="left",
    ).with_columns(
        pl.when(pl.col("err_reason").is_null() & pl.col("own_err").is_not_null())
        .then(
            _fmt_reason(
                "400 record belongs to the 300 record at line ",
                pl.col("own").cast(pl.Utf8),
                ", which was quarantined",
            )
        )
        .otherwise(pl.col("err_reason"))
        .alias("err_reason"),
        # the field of that reason, as parse_400 names it for a 400 without its 300
        pl.when(pl.col("err_reason").is_null() & pl.col("own_err").is_not_null())
        .then(pl.lit("RecordIndicator"))
        .otherwise(pl.col("err_field"))
        .alias("err_field"),
    )
    _count_skipped(r300, state)
    records, values = build_values(r300, r400)
    other = lines.filter(~pl.col("rec").is_in(["100", "200", "300", "400", "500", "900"]))
    unknown = other.select(
        "line_no",
        "rec",
        "text",
        pl.lit("RecordIndicator").alias("err_field"),
        _fmt_reason(
            "unknown record type ", _q(pl.col("rec")), " (NEM12 uses 100/200/300/400/500/900)"
        ).alias("err_reason"),
    )
    bad = pl.concat(
        [
            _bad(blocks.filter(~pl.col("ctx")), "200"),
            _bad(r300, "300"),
            _bad(r400, "400"),
            unknown.select(
                pl.col("line_no").cast(pl.Int32).alias("source_line"),
                pl.col("rec").alias("record_type"),
                pl.col("err_field").alias("field"),
                pl.col("err_reason").alias("reason"),
                pl.col("text").alias("raw"),
            ),
        ]
    ).sort("source_line")
    return ChunkResult(records=records, values=values, bad=bad), warnings


def _carry_block(lines: pl.DataFrame, state: StreamState) -> None:
    """Remember the 200 record in force at the end of the chunk (None after a 100/900)."""
    if not lines.height:
        return
    last_blk = lines["blk"][-1]
    if last_blk is None:
        state.last_200 = None
        return
    row = lines.filter(pl.col("line_no") == last_blk).row(0, named=True)
    state.last_200 = (int(row["line_no"]), str(row["text"]))


def _bad(frame: pl.DataFrame, rec: str) -> pl.DataFrame:
    return frame.filter(pl.col("err_reason").is_not_null()).select(
        pl.col("line_no").cast(pl.Int32).alias("source_line"),
        pl.lit(rec).alias("record_type"),
        pl.col("err_field").alias("field"),
        pl.col("err_reason").alias("reason"),
        pl.col("text").alias("raw"),
    )


def parse_200(rows: pl.DataFrame) -> pl.DataFrame:
    """Validate 200 records; one row per block with its unit factor and interval length."""
    rows = rows.with_columns(
        pl.col("text").str.split(",").list.eval(pl.element().str.strip_chars()).alias("f")
    )
    ilen_txt = _f(8)
    ilen = ilen_txt.cast(pl.Int32, strict=False)
    uom = _f(7).fill_null("").str.to_lowercase()
    fld, why = _first_error(
        [
            (
                pl.col("f").list.len() < 9,
                "IntervalLength",
                _fmt_reason(
                    "200 record has ",
                    pl.col("f").list.len().cast(pl.Utf8),
                    " fields; it needs at least 9 (NMI, NMIConfiguration, RegisterID, NMISuffix, "
                    "MDMDataStreamIdentifier, MeterSerialNumber, UOM, IntervalLength)",
                ),
            ),
            (_f(1).fill_null("") == "", "NMI", pl.lit("200 record has an empty NMI")),
            (_f(4).fill_null("") == "", "NMISuffix", pl.lit("200 record has an empty NMISuffix")),
            (
                ~ilen.is_in(list(INTERVAL_LENGTHS)).fill_null(False),
                "IntervalLength",
                _fmt_reason(
                    "IntervalLength ", _q(ilen_txt), " is not one of 1, 5, 10, 15, 30 minutes"
                ),
            ),
        ]
    )
    return rows.select(
        pl.col("line_no").alias("blk"),
        pl.col("line_no"),
        "text",
        "ctx",
        _f(1).alias("nmi"),
        _f(4).alias("suffix"),
        _f(7).fill_null("").alias("uom"),
        uom.is_in(list(ENERGY_UNITS)).alias("energy"),
        ilen.alias("interval_minutes"),
        fld.alias("err_field"),
        why.alias("err_reason"),
    )


def parse_300(rows: pl.DataFrame, blocks: pl.DataFrame) -> pl.DataFrame:
    """Validate 300 records against their 200 block (not yet the 400s); keep split fields."""
    rows = rows.join(
        blocks.select(
            "blk",
            "nmi",
            "suffix",
            "uom",
            "energy",
            "interval_minutes",
            pl.col("err_reason").is_not_null().alias("blk_bad"),
        ),
        on="blk",
        how="left",
        maintain_order="left",
    ).with_columns(
        pl.col("text").str.split(",").alias("f"),
        (MINUTES_PER_DAY // pl.col("interval_minutes")).alias("n_exp"),
    )
    n_exp = pl.col("n_exp")
    nf = pl.col("f").list.len()
    qual = _f(n_exp + 2).str.strip_chars()
    is_q = qual.str.contains(QUALITY_RE).fill_null(False)
    q_pos = (
        pl.col("f").list.slice(2).list.eval(pl.element().str.strip_chars().str.contains(QUALITY_RE))
    )
    n_found = pl.when(q_pos.list.any()).then(q_pos.list.arg_max())
    upd_txt = _f(n_exp + 5).str.strip_chars()
    msats_txt = _f(n_exp + 6).str.strip_chars()
    date_txt = _f(1).str.strip_chars()
    rows = rows.with_columns(
        _to_date(date_txt).alias("day"),
        qual.alias("qm"),
        _f(n_exp + 3).str.strip_chars().fill_null("").alias("reason_code"),
        _to_datetime(upd_txt).alias("upd"),
        _to_datetime(msats_txt).alias("msats"),
        is_q.alias("_is_q"),
    )
    # where the quality flag really is: only for records without one at the expected place
    # (a regex over every field of every line would cost more than the rest of the parse)
    found = rows.filter(~pl.col("_is_q")).select("line_no", n_found.alias("n_found"))
    rows = rows.join(found, on="line_no", how="left", maintain_order="left").drop("_is_q")
    blk_txt = pl.col("blk").cast(pl.Utf8)
    fld, why = _first_error(
        [
            (
                pl.col("blk").is_null(),
                "RecordIndicator",
                pl.lit("300 record before any 200 record"),
            ),
            (
                pl.col("blk_bad"),
                "NMI",
                _fmt_reason(
                    "300 record belongs to the 200 record at line ",
                    blk_txt,
                    ", which was quarantined",
                ),
            ),
            (
                pl.col("day").is_null(),
                "IntervalDate",
                _fmt_reason("IntervalDate ", _q(date_txt), " is not a valid YYYYMMDD date"),
            ),
            (
                ~is_q & pl.col("n_found").is_not_null(),
                "IntervalValue",
                _fmt_reason(
                    "300 record has ",
                    pl.col("n_found").cast(pl.Utf8),
                    " interval values but the 200 record at line ",
                    blk_txt,
                    " declares ",
                    pl.col("interval_minutes").cast(pl.Utf8),
                    "-minute intervals (",
                    n_exp.cast(pl.Utf8),
                    " values a day)",
                ),
            ),
            (
                ~is_q & (nf < n_exp + 3),
                "QualityMethod",
                _fmt_reason(
                    "300 record is truncated: ",
                    nf.cast(pl.Utf8),
                    " fields, but ",
                    pl.col("interval_minutes").cast(pl.Utf8),
                    "-minute data needs ",
                    n_exp.cast(pl.Utf8),
                    " values plus QualityMethod (",
                    (n_exp + 3).cast(pl.Utf8),
                    "+ fields)",
                ),
            ),
            (
                ~is_q,
                "QualityMethod",
                _fmt_reason(
                    "QualityMethod ",
                    _q(qual),
                    " (field ",
                    (n_exp + 3).cast(pl.Utf8),
                    ") is not a NEM12 quality flag (A, N, V, or E/S/F with a method code)",
                ),
            ),
            (
                nf < n_exp + 6,
                "UpdateDateTime",
                _fmt_reason(
                    "300 record is missing fields: ",
                    nf.cast(pl.Utf8),
                    " fields, NEM12 needs ",
                    (n_exp + 6).cast(pl.Utf8),
                    " (IntervalDate, values, QualityMethod, ReasonCode, ReasonDescription, UpdateDateTime)",
                ),
            ),
            (
                pl.col("upd").is_null() & (upd_txt.fill_null("") != ""),
                "UpdateDateTime",
                _fmt_reason("UpdateDateTime ", _q(upd_txt), " is not YYYYMMDDhhmmss"),
            ),
            (
                pl.col("msats").is_null() & (msats_txt.fill_null("") != ""),
                "MSATSLoadDateTime",
                _fmt_reason("MSATSLoadDateTime ", _q(msats_txt), " is not YYYYMMDDhhmmss"),
            ),
        ]
    )
    rows = rows.with_columns(fld.alias("err_field"), why.alias("err_reason"))
    skip = pl.col("err_reason").is_null() & ~pl.col("energy").fill_null(False)
    rows = rows.with_columns(skip.alias("skipped"))
    return _check_values(rows)


def _check_values(rows: pl.DataFrame) -> pl.DataFrame:
    """Parse the interval values (``x``, a list of floats); quarantine a 300 record holding a
    non-numeric, non-finite or negative value, quoting the first one."""
    e = pl.element()
    rows = rows.with_columns(
        pl.when(pl.col("err_reason").is_null() & ~pl.col("skipped"))
        .then(
            pl.col("f").list.slice(2, pl.col("n_exp")).list.eval(e.cast(pl.Float64, strict=False))
        )
        .alias("x")
    )
    mask = pl.col("x").list.eval(e.is_null() | ~e.is_finite() | (e < 0))
    bi = pl.when(mask.list.any()).then(mask.list.arg_max())
    rows = rows.with_columns(bi.alias("bi"))
    i_txt = (pl.col("bi") + 1).cast(pl.Utf8)
    v_txt = _q(_f(pl.col("bi") + 2))
    xv = pl.col("x").list.get(pl.col("bi"), null_on_oob=True)
    br = (
        pl.when(pl.col("bi").is_null())
        .then(pl.lit(None, pl.Utf8))
        .when(xv.is_null())
        .then(_fmt_reason("interval value ", i_txt, " ", v_txt, " is not a number"))
        .when(~xv.is_finite())
        .then(_fmt_reason("interval value ", i_txt, " ", v_txt, " is not finite"))
        .otherwise(_fmt_reason("interval value ", i_txt, " ", v_txt, " is negative"))
    )
    return rows.with_columns(
        pl.coalesce(
            "err_field",
            pl.when(pl.col("bi").is_not_null()).then(
                pl.concat_str([pl.lit("IntervalValue"), i_txt])
            ),
        ).alias("err_field"),
        pl.coalesce("err_reason", br).alias("err_reason"),
    ).drop("bi")


def parse_400(rows: pl.DataFrame, r300: pl.DataFrame) -> pl.DataFrame:
    """Validate 400 records on their own and against the 300 they follow."""
    rows = rows.join(
        r300.select(
            pl.col("line_no").alias("own"),
            pl.col("qm").alias("own_qm"),
            pl.col("n_exp"),
            pl.col("skipped").alias("own_skipped"),
            pl.col("err_reason").is_not_null().alias("own_bad"),
        ),
        on="own",
        how="left",
        maintain_order="left",
    ).with_columns(
        pl.col("text").str.split(",").list.eval(pl.element().str.strip_chars()).alias("f")
    )
    a_txt, b_txt, q_txt = _f(1), _f(2), _f(3)
    a = a_txt.cast(pl.Int32, strict=False)
    b = b_txt.cast(pl.Int32, strict=False)
    fld, why = _first_error(
        [
            (
                pl.col("own").is_null(),
                "RecordIndicator",
                pl.lit("400 record without a preceding 300 record"),
            ),
            (
                pl.col("own_bad").fill_null(False),
                "RecordIndicator",
                _fmt_reason(
                    "400 record belongs to the 300 record at line ",
                    pl.col("own").cast(pl.Utf8),
                    ", which was quarantined",
                ),
            ),
            (
                pl.col("own_qm").fill_null("") != "V",
                "QualityMethod",
                _fmt_reason(
                    "400 record follows the 300 record at line ",
                    pl.col("own").cast(pl.Utf8),
                    " whose quality is ",
                    _q(pl.col("own_qm")),
                    "; 400 records are only allowed after a 300 with quality V",
                ),
            ),
            (
                a.is_null() | b.is_null(),
                "StartInterval",
                _fmt_reason(
                    "StartInterval/EndInterval ",
                    _q(a_txt),
                    "/",
                    _q(b_txt),
                    " are not whole numbers",
                ),
            ),
            (
                (a < 1) | (b > pl.col("n_exp")) | (a > b),
                "EndInterval",
                _fmt_reason(
                    "interval range ",
                    a_txt,
                    "-",
                    b_txt,
                    " is outside 1-",
                    pl.col("n_exp").cast(pl.Utf8),
                    " or reversed",
                ),
            ),
            (
                ~q_txt.str.contains(QUALITY_RE).fill_null(False) | (q_txt == "V"),
                "QualityMethod",
                _fmt_reason(
                    "400 QualityMethod ",
                    _q(q_txt),
                    " is not a NEM12 quality flag other than V (A, N, or E/S/F with a method code)",
                ),
            ),
        ]
    )
    return rows.filter(~pl.col("own_skipped").fill_null(False)).with_columns(
        a.alias("a"),
        b.alias("b"),
        q_txt.alias("qm"),
        _f(4).fill_null("").alias("reason_code"),
        fld.alias("err_field"),
        why.alias("err_reason"),
    )


def check_coverage(r300: pl.DataFrame, r400: pl.DataFrame) -> pl.DataFrame:
    """A V-quality 300 needs valid 400 records covering each of its intervals exactly once."""
    cover = (
        r400.filter(pl.col("own").is_not_null())
        .group_by("own")
        .agg(
            pl.col("err_reason").drop_nulls().first().alias("e400"),
            pl.col("line_no").filter(pl.col("err_reason").is_not_null()).first().alias("l400"),
            (pl.col("b") - pl.col("a") + 1).sum().alias("n_cov"),
            pl.int_ranges("a", pl.col("b") + 1)
            .explode(empty_as_null=True)
            .n_unique()
            .alias("n_uni"),
        )
        .rename({"own": "line_no"})
    )
    is_v = (pl.col("qm") == "V") & pl.col("err_reason").is_null() & ~pl.col("skipped")
    r = r300.join(cover, on="line_no", how="left", maintain_order="left")
    fld, why = _first_error(
        [
            (
                is_v & pl.col("n_cov").is_null(),
                "QualityMethod",
                pl.lit("300 record has quality V but no 400 records follow it"),
            ),
            (
                is_v & pl.col("e400").is_not_null(),
                "QualityMethod",
                _fmt_reason(
                    "300 record has quality V but its 400 record at line ",
                    pl.col("l400").cast(pl.Utf8),
                    " is invalid",
                ),
            ),
            (
                is_v
                & ((pl.col("n_cov") != pl.col("n_exp")) | (pl.col("n_uni") != pl.col("n_exp"))),
                "QualityMethod",
                _fmt_reason(
                    "the 400 records of this V-quality 300 record cover ",
                    pl.col("n_uni").cast(pl.Utf8),
                    " of its ",
                    pl.col("n_exp").cast(pl.Utf8),
                    " intervals (",
                    (pl.col("n_cov") - pl.col("n_uni")).cast(pl.Utf8),
                    " covered twice); they must cover each interval exactly once",
                ),
            ),
        ]
    )
    return r.with_columns(
        pl.coalesce("err_field", fld).alias("err_field"),
        pl.coalesce("err_reason", why).alias("err_reason"),
    ).drop("e400", "l400", "n_cov", "n_uni")


def _count_skipped(r300: pl.DataFrame, state: StreamState) -> None:
    sk = r300.filter(pl.col("skipped")).group_by("nmi", "suffix", "uom").len()
    for nmi, suffix, uom, n in sk.iter_rows():
        key = (str(nmi), str(suffix), str(uom))
        state.skipped[key] = state.skipped.get(key, 0) + int(n)


def build_values(r300: pl.DataFrame, r400: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Records and readings (see :class:`ChunkResult`) of every good energy 300 record, in kWh
    and UTC, with their version.

    Everything constant within a record (times, quality, version) is computed once per record;
    the per-reading work is the explode of the values with the record's row, one integer time
    offset and the unit conversion.
    """
    good = r300.filter(pl.col("err_reason").is_null() & ~pl.col("skipped"))
    uom = pl.col("uom").str.to_lowercase()
    qm = pl.col("qm")
    method = qm.str.slice(1)
    t0 = (pl.col("day").cast(pl.Datetime("us")) - MARKET_OFFSET).cast(pl.Int64)
    ver = pl.coalesce("upd", "msats", "header_dt", pl.lit(EPOCH, pl.Datetime("us")))
    records = good.select(
        pl.col("line_no").cast(pl.Int32).alias("source_line"),
        "nmi",
        "suffix",
        pl.col("day").cast(pl.Int32).alias("day_no"),
        pl.col("interval_minutes").cast(pl.Int16),
        qm.str.slice(0, 1).alias("quality"),
        pl.when(method != "").then(method).alias("method"),
        pl.when(pl.col("reason_code") != "").then(pl.col("reason_code")).alias("reason"),
        (ver - MARKET_OFFSET).dt.replace_time_zone("UTC").alias("version_at"),
    )
    step_us = pl.col("interval_minutes").cast(pl.Int64) * 60_000_000
    rec = good.select(
        pl.int_range(0, pl.len(), dtype=pl.Int32).alias("rec"),
        t0.alias("t0"),
        step_us.alias("step"),
        pl.col("x").alias("kwh"),
        pl.int_ranges(0, pl.col("n_exp"), dtype=pl.Int64).alias("i"),
        (uom == "wh").alias("_wh"),
        (uom == "mwh").alias("_mwh"),
        pl.col("n_exp"),
    )
    values = rec.select("rec", "t0", "step", "kwh", "i").explode("kwh", "i", empty_as_null=True)
    values = values.with_columns(_to_kwh(rec, values["kwh"]))
    if good.filter(qm == "V").height:
        values = _apply_400(values, good, r400)
    else:
        values = values.with_columns(
            pl.lit(None, pl.Utf8).alias("flag_quality"),
            pl.lit(None, pl.Utf8).alias("flag_method"),
            pl.lit(None, pl.Utf8).alias("flag_reason"),
        )
    start = (pl.col("t0") + pl.col("i") * pl.col("step")).cast(pl.Datetime("us", "UTC"))
    return records, values.select(
        "rec", start.alias("interval_start"), "kwh", "flag_quality", "flag_method", "flag_reason"
    )


def _to_kwh(rec: pl.DataFrame, values: pl.Series) -> pl.Series:
    """Values in kWh: Wh / 1000 and MWh * 1000, each one exact IEEE operation (numpy; polars
    would multiply by the reciprocal when dividing by a scalar: 2304 / 1000 -> 2.3040000000000003)."""
    wh, mwh = rec["_wh"], rec["_mwh"]
    if not (wh.any() or mwh.any()):
        return values
    x = values.to_numpy()
    counts = rec["n_exp"].to_numpy()
    out = np.where(np.repeat(wh.to_numpy(), counts), x / 1000.0, x)
    out = np.where(np.repeat(mwh.to_numpy(), counts), x * 1000.0, out)
    return pl.Series("kwh", out, pl.Float64)


def _apply_400(values: pl.DataFrame, good: pl.DataFrame, r400: pl.DataFrame) -> pl.DataFrame:
    """Per-interval quality, method and reason of V days from their 400 records."""
    v_lines = good.filter(pl.col("qm") == "V")["line_no"].implode()
    rec_of = good.select(
        pl.col("line_no").alias("own"), pl.int_range(0, pl.len(), dtype=pl.Int32).alias("_rec")
    )
    per = (
        r400.filter(pl.col("own").is_in(v_lines))
        .join(rec_of, on="own", how="left")
        .select(
            pl.col("_rec").alias("rec"),
            pl.int_ranges(pl.col("a") - 1, pl.col("b"), dtype=pl.Int64).alias("i"),
            pl.col("qm").alias("qm4"),
            pl.col("reason_code").alias("rc4"),
        )
        .explode("i", empty_as_null=True)
    )
    m4 = pl.col("qm4").str.slice(1)
    return (
        values.join(per, on=["rec", "i"], how="left", maintain_order="left")
        .with_columns(
            pl.col("qm4").str.slice(0, 1).alias("flag_quality"),
            pl.when(m4 != "").then(m4).alias("flag_method"),
            pl.when(pl.col("rc4") != "").then(pl.col("rc4")).alias("flag_reason"),
        )
        .drop("qm4", "rc4")
    )
