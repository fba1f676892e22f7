"""Customer file ingestion: accounts, NMIs, loss factors, enrolments and cohort attributes.

The file format is a CSV with one row per account x product enrolment (see README, "File
formats"). Validation is vectorised (polars expressions over the whole file): every broken rule
on a row becomes one quarantine record naming the line, the field and the offending value; rows
without problems still load. An account whose rows disagree on an account attribute, or whose
enrolments overlap, is quarantined whole (its enrolments cannot be trusted piecemeal).
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable, Sequence
from pathlib import Path

import polars as pl

from settlement.ingest_common import (
    FileResult,
    IngestReport,
    already_ingested,
    finish_file,
    quarantine_file,
    quarantine_rows,
    register_file,
    sha256_file,
)
from settlement.store import Store

Progress = Callable[[str, int, int | None], None]

ACCOUNT_FIELDS = (
    "nmi",
    "region",
    "timezone",
    "dlf",
    "mlf",
    "billing_cycle",
    "cycle_day",
    "move_in",
    "move_out",
    "solar_kw",
    "battery_kwh",
    "battery_kw",
    "backup_reserve_pct",
    "ev",
    "concession",
    "vpp_contract",
)
COLUMNS = ("account", *ACCOUNT_FIELDS, "product", "product_from", "product_to")
REQUIRED = (
    "account",
    "nmi",
    "region",
    "timezone",
    "dlf",
    "mlf",
    "billing_cycle",
    "cycle_day",
    "move_in",
    "product",
    "product_from",
)
FLOATS = {
    "dlf": (0.8, 1.3),
    "mlf": (0.7, 1.3),
    "solar_kw": (0.0, 1000.0),
    "battery_kwh": (0.0, 10000.0),
    "battery_kw": (0.0, 10000.0),
    "backup_reserve_pct": (0.0, 100.0),
}
DATES = ("move_in", "move_out", "product_from", "product_to")
BOOLS = ("ev", "concession")
TRUE_WORDS = ("true", "1", "yes", "y", "t")
FALSE_WORDS = ("false", "0", "no", "n", "f", "")
REGIONS = ("NSW1", "QLD1", "VIC1", "SA1", "TAS1")


def _problem(cond: pl.Expr, field: str, reason: pl.Expr) -> pl.Expr:
    """A struct(field, reason) when ``cond`` holds, else null."""
    return pl.when(cond).then(pl.struct(pl.lit(field).alias("field"), reason.alias("reason")))


def _checks(raw: pl.DataFrame) -> list[pl.Expr]:
    """One expression per rule, each a struct(field, reason) or null, over the raw strings."""
    c = pl.col
    checks: list[pl.Expr] = []
    if "_extra_fields" in raw.columns:  # read_customer_csv counted fields past the header's
        n = c("_header_fields") + c("_extra_fields")
        checks.append(
            pl.when(c("_extra_fields") > 0).then(
                pl.struct(
                    pl.format("field {}", c("_header_fields") + 1).alias("field"),
                    pl.format("the line has {} fields, the header {}", n, "_header_fields").alias(
                        "reason"
                    ),
                )
            )
        )
    checks += [
        _problem(c(f).is_null() | (c(f).str.strip_chars() == ""), f, pl.lit("is required"))
        for f in REQUIRED
    ]
    for f, (lo, hi) in FLOATS.items():
        v = c(f).str.strip_chars().cast(pl.Float64, strict=False)
        given = c(f).is_not_null() & (c(f).str.strip_chars() != "")
        checks.append(_problem(given & v.is_null(), f, pl.format("{} is not a number", c(f))))
        checks.append(
            _problem(
                v.is_not_null() & ((v < lo) | (v > hi)),
                f,
                pl.format(f"{{}} is outside [{lo}, {hi}]", c(f)),
            )
        )
    for f in DATES:
        d = c(f).str.strip_chars().str.to_date("%Y-%m-%d", strict=False)
        given = c(f).is_not_null() & (c(f).str.strip_chars() != "")
        checks.append(
            _problem(given & d.is_null(), f, pl.format("{} is not a YYYY-MM-DD date", c(f)))
        )
    for f in BOOLS:
        ok = c(f).is_null() | c(f).str.strip_chars().str.to_lowercase().is_in(
            TRUE_WORDS + FALSE_WORDS
        )
        checks.append(_problem(~ok, f, pl.format("{} is not true/false", c(f))))
    cycle = c("cycle_day").str.strip_chars().cast(pl.Int32, strict=False)
    checks += [
        _problem(
            c("cycle_day").is_not_null() & (cycle.is_null() | (cycle < 1) | (cycle > 28)),
            "cycle_day",
            pl.format("{} is not a day 1..28", c("cycle_day")),
        ),
        _problem(
            ~c("billing_cycle")
            .str.strip_chars()
            .str.to_lowercase()
            .is_in(["monthly", "quarterly"]),
            "billing_cycle",
            pl.format("{} is not monthly or quarterly", c("billing_cycle")),
        ),
        _problem(
            ~c("region").str.strip_chars().str.to_uppercase().is_in(REGIONS),
            "region",
            pl.format("{} is not a NEM region (NSW1 QLD1 VIC1 SA1 TAS1)", c("region")),
        ),
        _problem(
            ~c("timezone").str.strip_chars().is_in(_valid_timezones(raw)),
            "timezone",
            pl.format("{} is not an IANA time zone", c("timezone")),
        ),
        _problem(
            _date("product_to") <= _date("product_from"),
            "product_to",
            pl.format("{} is not after product_from {}", c("product_to"), c("product_from")),
        ),
        _problem(
            _date("move_out") <= _date("move_in"),
            "move_out",
            pl.format("{} is not after move_in {}", c("move_out"), c("move_in")),
        ),
    ]
    return checks


def _date(name: str) -> pl.Expr:
    return pl.col(name).str.strip_chars().str.to_date("%Y-%m-%d", strict=False)


def _valid_timezones(raw: pl.DataFrame) -> list[str]:
    """The distinct time-zone names in the file that zoneinfo knows (a loop over few names)."""
    names = raw.get_column("timezone").drop_nulls().str.strip_chars().unique().to_list()
    valid = []
    for name in names:
        try:
            zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            continue
        valid.append(name)
    return valid


def read_customer_csv(path: Path) -> pl.DataFrame:
    """Read the CSV as strings with a ``source_line`` column (header is line 1).

    Raises :class:`CustomerFileError` when a required column is missing.
    """
    from tariffs.errors import CustomerFileError

    try:
        header = pl.read_csv(path, n_rows=0, infer_schema=False, truncate_ragged_lines=True).columns
        # a line with more fields than the header fills spare columns (up to EXTRA_FIELDS;
        # any beyond are cut), so it is one bad line with its number, not an unreadable file
        spare = [f"_spare_{i}" for i in range(EXTRA_FIELDS)]
        raw = pl.read_csv(
            path,
            has_header=False,
            skip_rows=1,
            schema=dict.fromkeys([*header, *spare], pl.Utf8),
            row_index_name="source_line",
            row_index_offset=2,
            truncate_ragged_lines=True,
        )
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError) as exc:
        raise CustomerFileError(path, f"cannot be read as CSV: {exc}") from exc
    raw = raw.with_columns(
        pl.sum_horizontal(pl.col(spare).is_not_null()).alias("_extra_fields"),
        pl.lit(len(header), pl.Int32).alias("_header_fields"),
    ).drop(spare)
    raw = raw.rename({c: c.strip().lower() for c in header})
    missing = [c for c in COLUMNS if c not in raw.columns and c in REQUIRED]
    if missing:
        raise CustomerFileError(path, f"missing column(s) {missing}", line=1, field=missing[0])
    for col in COLUMNS:
        if col not in raw.columns:
            raw = raw.with_columns(pl.lit(None, pl.Utf8).alias(col))
    return raw.with_columns(pl.col("source_line").cast(pl.Int32))


# spare columns read past the header's (see read_customer_csv)
EXTRA_FIELDS = 8


def validate_customers(raw: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split raw rows into (typed good rows, quarantine records).

    Row-level rules first; then account-level rules on the surviving rows: attributes must agree
    across an account's rows, and its enrolments must not overlap.
    """
    problems = (
        raw.with_columns(pl.concat_list(_checks(raw)).list.drop_nulls().alias("_p"))
        .select("source_line", "account", "_p")
        .explode("_p", empty_as_null=True)
        .drop_nulls("_p")
        .unnest("_p")
    )
    bad_lines = problems.get_column("source_line").unique()
    typed = _typed(raw.filter(~pl.col("source_line").is_in(bad_lines.implode())))
    # an account loads whole or not at all: the newest file defines it, so its other rows
    # alone would redefine it from part of its rows (an enrolment silently dropped)
    partial = (
        problems.filter(pl.col("account").is_not_null())
        .group_by(pl.col("account").str.strip_chars())
        .agg(pl.min("source_line").alias("_line"))
        .select(
            "account",
            pl.lit("account").alias("field"),
            pl.format(
                "another row of account {} (line {}) was quarantined; an account loads whole "
                "or not at all",
                "account",
                "_line",
            ).alias("reason"),
        )
    )
    others = _account_problems(typed).join(partial.select("account"), on="account", how="anti")
    acct_problems = pl.concat([partial, others])
    bad_accounts = acct_problems.get_column("account").unique()
    good = typed.filter(~pl.col("account").is_in(bad_accounts.implode()))
    acct_rows = typed.filter(pl.col("account").is_in(bad_accounts.implode())).join(
        acct_problems, on="account"
    )
    quarantine = pl.concat(
        [
            problems.select("source_line", "field", "reason"),
            acct_rows.select("source_line", "field", "reason"),
        ]
    ).join(raw.select("source_line", _raw_text(raw)), on="source_line", how="left")
    return good, quarantine.with_columns(pl.lit("customer").alias("record_type")).sort(
        "source_line"
    )


def _raw_text(raw: pl.DataFrame) -> pl.Expr:
    cols = [pl.col(c).fill_null("") for c in raw.columns if c in COLUMNS]
    return pl.concat_str(cols, separator=",").alias("raw")


def _typed(raw: pl.DataFrame) -> pl.DataFrame:
    s = pl.col
    to_bool = {w: True for w in TRUE_WORDS} | {w: False for w in FALSE_WORDS}
    return raw.select(
        s("source_line").cast(pl.Int32),
        s("account").str.strip_chars(),
        s("nmi").str.strip_chars(),
        s("region").str.strip_chars().str.to_uppercase(),
        s("timezone").str.strip_chars(),
        *[s(f).str.strip_chars().cast(pl.Float64).fill_null(0.0) for f in FLOATS],
        s("billing_cycle").str.strip_chars().str.to_lowercase(),
        s("cycle_day").str.strip_chars().cast(pl.Int16),
        *[_date(f).alias(f) for f in DATES],
        *[
            s(f)
            .fill_null("")
            .str.strip_chars()
            .str.to_lowercase()
            .replace_strict(to_bool, return_dtype=pl.Boolean)
            for f in BOOLS
        ],
        pl.when(s("vpp_contract").str.strip_chars() == "")
        .then(None)
        .otherwise(s("vpp_contract").str.strip_chars())
        .alias("vpp_contract"),
        s("product").str.strip_chars(),
    )


def _account_problems(typed: pl.DataFrame) -> pl.DataFrame:
    """(account, field, reason) for accounts breaking an account-level rule."""
    disagree = [
        typed.group_by("account")
        .agg(pl.col(f).n_unique().alias("n"))
        .filter(pl.col("n") > 1)
        .select(
            "account",
            pl.lit(f).alias("field"),
            pl.lit(f"{f} differs between the account's rows").alias("reason"),
        )
        for f in ACCOUNT_FIELDS
    ]
    ordered = typed.sort("account", "product_from").with_columns(
        pl.col("product_to").shift(1).over("account").alias("_prev_to"),
        pl.col("product_to").is_null().shift(1).over("account").alias("_prev_open"),
    )
    overlap = ordered.filter(
        pl.col("_prev_open") | (pl.col("_prev_to") > pl.col("product_from"))
    ).select(
        "account",
        pl.lit("product_from").alias("field"),
        pl.format("enrolment from {} overlaps the previous one", pl.col("product_from")).alias(
            "reason"
        ),
    )
    return pl.concat([*disagree, overlap]).unique(["account", "field"], keep="first")


def ingest_customer_file(
    store: Store, path: Path, *, progress: Progress | None = None
) -> IngestReport:
    """Ingest one customer CSV into ``customers_raw`` / ``enrolments_raw`` (one transaction).

    The newest customer file that mentions an account defines it (the ``customers`` and
    ``enrolments`` views); earlier versions stay in the raw tables for audit.
    """
    return IngestReport(files=[_ingest_one(store, Path(path))])


def ingest_customer_files(
    store: Store, paths: Sequence[Path], *, progress: Progress | None = None
) -> IngestReport:
    """Ingest several customer files in the given order."""
    return IngestReport(files=[_ingest_one(store, Path(p)) for p in paths])


def _ingest_one(store: Store, path: Path) -> FileResult:
    from tariffs.errors import CustomerFileError

    digest = sha256_file(path)
    result = FileResult(path=str(path), kind="customers", status="loaded", sha256=digest)
    if (fid := already_ingested(store, "customers", digest)) is not None:
        result.status, result.file_id = "duplicate", fid
        return result
    with store.transaction():
        result.file_id = register_file(store, path, "customers", digest, "customers-csv")
        try:
            raw = read_customer_csv(path)
        except CustomerFileError as exc:
            quarantine_file(store, result.file_id, str(path), str(exc))
            result.status, result.rows_quarantined = "rejected", 1
            result.errors.append(str(exc))
            finish_file(store, result)
            return result
        good, bad = validate_customers(raw)
        result.rows_quarantined = quarantine_rows(store, result.file_id, str(path), bad)
        result.errors += [
            f"line {r['source_line']}: {r['field']}: {r['reason']}"
            for r in bad.head(5).iter_rows(named=True)
        ]
        _insert(store, result.file_id, good)
        result.rows_loaded = good.height
        result.status = "partial" if result.rows_quarantined else "loaded"
        finish_file(store, result)
    return result


def _insert(store: Store, file_id: int, good: pl.DataFrame) -> None:
    accounts = good.sort("source_line").unique("account", keep="first", maintain_order=True)
    store.con.register("_acc", accounts.to_arrow())
    store.con.register("_enr", good.to_arrow())
    try:
        store.con.execute(
            "INSERT INTO customers_raw SELECT account, nmi, region, timezone, dlf, mlf, "
            "billing_cycle, cycle_day, move_in, move_out, solar_kw, battery_kwh, battery_kw, "
            "backup_reserve_pct, ev, concession, vpp_contract, ?, source_line FROM _acc",
            [file_id],
        )
        store.con.execute(
            "INSERT INTO enrolments_raw SELECT account, product, product_from, product_to, ?, "
            "source_line FROM _enr",
            [file_id],
        )
    finally:
        store.con.unregister("_acc")
        store.con.unregister("_enr")
