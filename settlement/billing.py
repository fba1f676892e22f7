"""Bill runs: segments from the store, intervals and prices into the tariff calculus, bills out.

Public API (called by the CLI and the nightly run):

- :func:`load_products` ``(dir) -> dict[str, Product]`` reads ``*.toml`` product files.
- :func:`bill_accounts` ``(store, period_start, period_end, accounts=None, products=None, *,
  shadow=False, status="draft") -> BillRunResult`` bills every account cycle that STARTS in
  ``[period_start, period_end)``: actual bills on each account's enrolled product(s), or with
  ``shadow=True`` one shadow bill per account and chosen product for the same days.
- :func:`compare_products` runs a shadow run and reports winners and losers per account and cohort.

Billing cycles: ``monthly`` cycles start on ``cycle_day`` of every month; ``quarterly`` ones on
``cycle_day`` of January, April, July and October. A cycle is cut at move-in/move-out and at
product switches (one bill per product segment, fixed charges prorated by the days of the
segment). Reads and prices are taken as known at the run's start (``meter_reads_as_of``), so a
bill can be recomputed later (:mod:`settlement.billing_explain`). Quality ``N`` reads count as
missing; quality ``E`` (forward estimate) is billed and flagged. A segment missing any import read,
any read of a channel it has, or (spot-linked products) any price, is held with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Literal

import duckdb
import polars as pl

from settlement.accruals import accrual_cover, bill_segments_fast, on_site_clock
from settlement.billing_io import (
    fetch_intervals,
    segments_frame,
    write_bills,
)
from settlement.billing_sql import bill_segments_sql
from settlement.store import Store
from tariffs.calculus import (
    Context,
    dated_parameters,
    first_day_without,
    priced_suffixes,
    span_days,
    whole_bill_changes,
)
from tariffs.calendar import holiday_dates
from tariffs.errors import AuditFailedError, ConfigError, FairshareError
from tariffs.lines import SegmentBills, bill_segments
from tariffs.product import Product, parse_product
from tariffs.sql import sql_capable

Progress = Callable[[str, int, int | None], None]
# Each fast-path pass reads the whole meter_values table once and returns only aggregates
# (segments x clock keys), so it takes many more segments than the polars path's batches.
SQL_BATCH_SIZE = 250_000
# The store's audit views (settlement/schema.py), restricted to one run's bills: the same checks,
# without re-reading every bill ever issued after each run.
RUN_AUDITS = {
    "audit_bill_line_sums": """
        SELECT count(*) FROM (
          SELECT b.bill_id FROM bills b JOIN bill_lines l USING (bill_id) WHERE b.run_id = ?
          GROUP BY b.bill_id, b.total_ex_gst, b.gst, b.total_inc_gst
          HAVING sum(l.amount_ex_gst) <> b.total_ex_gst OR sum(l.gst) <> b.gst
              OR b.total_inc_gst <> b.total_ex_gst + b.gst)""",
    "audit_duplicate_bills": """
        SELECT count(*) FROM (SELECT 1 FROM bills WHERE run_id = ?
          GROUP BY account, period_start, product HAVING count(*) > 1)""",
    "audit_duplicate_bill_ids": """
        SELECT count(*) FROM (SELECT 1 FROM bills WHERE run_id = ? GROUP BY bill_id
          HAVING count(*) > 1)""",
    "audit_duplicate_bill_lines": """
        SELECT count(*) FROM (SELECT 1 FROM bill_lines WHERE bill_id IN
          (SELECT bill_id FROM bills WHERE run_id = ?) GROUP BY bill_id, line_no
          HAVING count(*) > 1)""",
    "audit_feed_in_gst": """
        SELECT count(*) FROM bill_lines l JOIN bills b USING (bill_id)
        WHERE b.run_id = ? AND NOT l.taxable AND l.gst <> 0""",
}


@dataclass
class BillRunResult:
    """What a bill run produced."""

    run_id: int
    period_start: date
    period_end: date
    shadow: bool
    bills: int = 0
    held: int = 0
    total_inc_gst: dict[str, float] = field(default_factory=dict)  # by currency
    holds: list[tuple[str, str, str]] = field(default_factory=list)  # (bill_id, account, reason)
    bill_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary."""
        return {
            "run_id": self.run_id,
            "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(),
            "shadow": self.shadow,
            "bills": self.bills,
            "held": self.held,
            "total_inc_gst": self.total_inc_gst,
            "holds": [list(h) for h in self.holds[:50]],
        }


def read_product_file(path: Path) -> Product:
    """Read and validate one product file (errors name the file and key)."""
    return parse_product(path.read_text(encoding="utf-8"), str(path))


def load_products(directory: str | Path) -> dict[str, Product]:
    """Every ``*.toml`` product in ``directory`` by id; ids must be unique and match file names."""
    folder = Path(directory)
    if not folder.is_dir():
        raise ConfigError(f"product folder {folder} does not exist")
    out: dict[str, Product] = {}
    for path in sorted(folder.glob("*.toml")):
        product = read_product_file(path)
        if product.id in out:
            raise ConfigError(f"product id {product.id!r} is defined twice (second in {path})")
        out[product.id] = product
    return out


def product_texts(directory: str | Path) -> dict[str, tuple[str, str]]:
    """``{product id: (path, text)}`` for recording product versions with a run."""
    res = {}
    for path in sorted(Path(directory).glob("*.toml")):
        res[read_product_file(path).id] = (str(path), path.read_text(encoding="utf-8"))
    return res


def _context(product: Product, timezone: str, segs: pl.DataFrame) -> Context:
    years = sorted({d.year for d in span_days(segs)})
    tz = product.timezone or timezone
    return Context(product, tz, tuple(holiday_dates(product.holidays, years)))


def _price_group(
    product: Product, timezone: str, segs: pl.DataFrame, iv: pl.DataFrame
) -> SegmentBills:
    years = sorted({d.year for d in span_days(segs)} | {segs["start"].min().year})  # type: ignore[union-attr]
    ctx = Context(
        product, product.timezone or timezone, tuple(holiday_dates(product.holidays, years))
    )
    return bill_segments(ctx, iv, segs.select("seg", "start", "end", "cycle_days", "concession"))


def _rate_hold(product: Product, timezone: str, segs: pl.DataFrame) -> str | None:
    ctx = Context(product, timezone, ())
    missing = first_day_without(ctx, span_days(segs))
    return (
        None
        if missing is None
        else f"product {product.id}: {missing[0]} has no rate on {missing[1]}"
    )


def _region_holds(
    product: Product, segs: pl.DataFrame
) -> tuple[list[tuple[pl.DataFrame, str]], pl.DataFrame]:
    """Segments of sites outside the product's market region (``region``), with the hold
    reason, and the segments left: a product's network rates, public holidays and spot price
    are its region's, so a site elsewhere (an NSW1 product on a VIC1 site would take NSW's
    holidays for Victoria's) is held, never billed on them. A product without a region applies
    anywhere."""
    if product.region is None:
        return [], segs
    other = segs.filter(pl.col("region") != product.region)
    out = [
        (
            group,
            f"product {product.id} is for market region {product.region} (its network rates,"
            f" public holidays and spot price); the site is in {region}",
        )
        for (region,), group in other.partition_by("region", as_dict=True).items()
    ]
    return out, segs.filter(pl.col("region") == product.region)


def _whole_bill_change_holds(
    product: Product, segs: pl.DataFrame
) -> tuple[list[tuple[pl.DataFrame, str]], pl.DataFrame]:
    """Segments whose period strictly contains a change of the tax rate, a discount fraction or
    a minimum charge (:func:`tariffs.calculus.whole_bill_changes`), with the hold reason, and
    the segments left to price: such a bill would be priced at one value for the whole period,
    so it is held, never billed wrong. Each segment is held once, for the first such change."""
    out = []
    left = segs
    for what, day in whole_bill_changes(product):
        inside = left.filter((pl.col("start") < day) & (pl.col("end") > day))
        if inside.height:
            out.append(
                (
                    inside,
                    f"product {product.id}: {what} changes on {day}, inside the billing period "
                    "(whole-bill lines are not split at a change: set it on a cycle boundary)",
                )
            )
            left = left.join(inside.select("seg"), on="seg", how="anti")
    return out, left


def bill_accounts(
    store: Store,
    period_start: date,
    period_end: date,
    accounts: Sequence[str] | None = None,
    products: dict[str, Product] | None = None,
    *,
    shadow: bool = False,
    status: str = "draft",
    product_dir: str | Path | None = None,
    progress: Progress | None = None,
    as_of: datetime | None = None,
    batch_size: int = 20_000,
    run_id: int | None = None,
    engine: Literal["auto", "pass", "polars"] = "auto",
) -> BillRunResult:
    """Bill the cycles starting in ``[period_start, period_end)`` (see module docstring).

    ``products`` defaults to :func:`load_products` of ``product_dir``; with ``shadow=True`` every
    product given is billed for every account. Segments are priced in batches of ``batch_size``
    (all accounts of a batch at once) to bound memory. ``as_of`` is recorded as the run's data
    instant (default: now). ``run_id`` fixes the billing-run id (the nightly run derives it from
    its own id so that a rerun after a crash rewrites the same bills; an unfinished run of that
    id is discarded first). ``engine="auto"`` prices energy and feed-in lines from the nightly's
    accruals where every day of a segment is accrued from current data
    (:func:`settlement.accruals.bill_segments_fast`), else with one pass over the reads inside
    DuckDB when the product allows (:mod:`settlement.billing_sql`; ``engine="pass"`` always
    does), else in polars (the reference path, ``engine="polars"``). Raises :class:`AuditFailedError` when a post-run
    audit finds rows (the run's writes are rolled back).
    """
    if period_end <= period_start:
        raise ConfigError(f"period end {period_end} must be after its start {period_start}")
    if products is None:
        if product_dir is None:
            raise ConfigError("give products or product_dir")
        products = load_products(product_dir)
    texts = product_texts(product_dir) if product_dir is not None else {}
    note = progress or (lambda _d, _a, _t: None)
    run_id, _started = _start_run(store, period_start, period_end, shadow, as_of, run_id)
    segs = segments_frame(store, period_start, period_end, accounts, products, shadow=shadow)
    note("segments", segs.height, segs.height)
    results: list[tuple[Product, pl.DataFrame, SegmentBills | None, str | None]] = []
    groups = segs.partition_by("product", "timezone", as_dict=True, maintain_order=True)
    to_price: list[tuple[Product, str, pl.DataFrame]] = []
    for (pid, tz), group in groups.items():
        product = products[str(pid)]
        elsewhere, group = _region_holds(product, group)
        results += [(product, split, None, reason) for split, reason in elsewhere]
        if group.is_empty():
            continue
        hold = _rate_hold(product, str(tz), group)
        if hold is not None:
            results.append((product, group, None, hold))
            continue
        changes, group = _whole_bill_change_holds(product, group)
        results += [(product, split, None, reason) for split, reason in changes]
        if not group.is_empty():
            to_price.append((product, str(tz), group))
    # the groups billed from their accruals where covered: one cover for all of them
    accrued = [
        (product, group)
        for product, tz, group in to_price
        if engine == "auto" and sql_capable(product.components) and on_site_clock(product, [tz])
    ]
    done = 0
    with accrual_cover(store, accrued):
        for product, tz, group in to_price:
            fast = engine != "polars" and sql_capable(product.components)
            for batch in group.iter_slices(max(batch_size, SQL_BATCH_SIZE) if fast else batch_size):
                if fast:
                    ctx = _context(product, tz, batch)
                    priced = (
                        bill_segments_fast(store, ctx, batch)
                        if engine == "auto"
                        else bill_segments_sql(store, ctx, batch)
                    )
                else:
                    iv, input_holds = fetch_intervals(
                        store, batch, product.needs_spot, priced=priced_suffixes(product)
                    )
                    priced = _price_group(product, tz, batch, iv)
                    del iv
                    priced.holds = pl.concat([priced.holds, input_holds])
                results.append((product, batch, priced, None))
                done += batch.height
                note(f"priced {product.id} ({tz})", done, segs.height)
    result = BillRunResult(run_id, period_start, period_end, shadow)
    with store.transaction():
        write_bills(store, run_id, results, texts, shadow=shadow, status=status, result=result)
        _audit(store, run_id)
        store.con.execute(
            "UPDATE billing_runs SET finished_at = now(), status = 'done', bills = ?, "
            "bills_held = ? WHERE run_id = ?",
            [result.bills, result.held, run_id],
        )
    note("written", result.bills, result.bills)
    return result


def discard_attempt(con: duckdb.DuckDBPyConnection, run_id: int) -> None:
    """Delete what an earlier attempt of billing run ``run_id`` left (inside the caller's
    transaction): its bills but the issued ones, their lines, and the run's row."""
    con.execute(
        "DELETE FROM bill_lines WHERE bill_id IN (SELECT bill_id FROM bills "
        "WHERE run_id = ? AND status <> 'issued')",
        [run_id],
    )
    con.execute("DELETE FROM bills WHERE run_id = ? AND status <> 'issued'", [run_id])
    con.execute("DELETE FROM billing_runs WHERE run_id = ?", [run_id])


def _start_run(
    store: Store,
    start: date,
    end: date,
    shadow: bool,
    as_of: datetime | None,
    run_id: int | None = None,
) -> tuple[int, datetime]:
    if run_id is not None:  # a given id: discard what an earlier attempt of it left behind,
        # except the bills it issued: a nightly killed after its issue step reruns the same
        # billing runs for the cycles still due (a held one), and an issued bill never changes
        with store.transaction() as con:
            discard_attempt(con, run_id)
    row = store.con.execute(
        "INSERT INTO billing_runs (run_id, started_at, data_as_of, period_start, period_end, "
        "shadow, status) VALUES (coalesce(?, nextval('bill_run_seq')), now(), "
        "coalesce(?::TIMESTAMPTZ, now()), ?, ?, ?, 'running') RETURNING run_id, data_as_of",
        [run_id, as_of, start, end, shadow],
    ).fetchall()
    return int(row[0][0]), row[0][1]


def _audit(store: Store, run_id: int) -> None:
    for view, sql in RUN_AUDITS.items():
        n = store.con.execute(sql, [run_id]).fetchone()
        if n and n[0]:
            raise AuditFailedError(f"bill run {run_id}: audit {view} returned {n[0]} row(s)")


def cohort_columns() -> Iterable[str]:
    """Customer attributes that define cohorts in comparisons."""
    return ("solar", "battery", "ev", "concession", "vpp")


def parse_period(text: str) -> tuple[date, date]:
    """``2024-07`` (a month), ``2024Q3`` (a quarter) or ``2024-07-01..2024-10-01`` (end exclusive)."""
    t = text.strip()
    try:
        if ".." in t:
            a, b = t.split("..", 1)
            return date.fromisoformat(a), date.fromisoformat(b)
        if len(t) == 6 and t[4] in "Qq":
            year, q = int(t[:4]), int(t[5])
            if not 1 <= q <= 4:
                raise ValueError
            start = date(year, 3 * q - 2, 1)
            return start, date(year + (q == 4), 1 if q == 4 else 3 * q + 1, 1)
        year, month = (int(x) for x in t.split("-"))
        return date(year, month, 1), date(year + (month == 12), 1 if month == 12 else month + 1, 1)
    except ValueError as exc:
        raise ConfigError(
            f"period {text!r} must be YYYY-MM, YYYYQn or YYYY-MM-DD..YYYY-MM-DD"
        ) from exc


def list_bills(store: Store, period: str, status: str | None = None) -> pl.DataFrame:
    """Bills whose cycle starts in ``period`` (optionally of one status); a final adjustment
    bill's cycle is the last day of the nightly run that made it."""
    start, end = parse_period(period)
    return store.con.sql(
        "SELECT bill_id, account, period_start, period_end, product, status, total_inc_gst,"
        " hold_reason, kind FROM bills WHERE cycle_start >= ? AND cycle_start < ?"
        " AND (?::VARCHAR IS NULL OR status = ?) ORDER BY account, period_start, product",
        params=[start, end, status, status],
    ).pl()


def validate_product_files(paths: Sequence[str | Path]) -> list[dict[str, object]]:
    """Validate each product file (folders: their ``*.toml``); one result per file."""
    files: list[Path] = []
    for p in map(Path, paths):
        files += sorted(p.glob("*.toml")) if p.is_dir() else [p]
    results: list[dict[str, object]] = []
    for f in files:
        try:
            prod = read_product_file(f)
            results.append(
                {
                    "path": str(f),
                    "ok": True,
                    "message": f"{prod.id} ({prod.kind}, version {prod.version})",
                }
            )
        except (FairshareError, OSError) as exc:
            results.append({"path": str(f), "ok": False, "message": str(exc)})
    return results


def describe_product(
    directory: str | Path, product_id: str, on: date | None
) -> list[dict[str, object]]:
    """Every dated parameter of a product (or those in force on ``on``), with its source."""
    products = load_products(directory)
    if product_id not in products:
        raise ConfigError(f"no product {product_id!r} in {directory} (have {sorted(products)})")
    rows: list[dict[str, object]] = []
    for path, entries in dated_parameters(products[product_id]):
        chosen = [e for e in entries if on is None or e.effective_from <= on]
        if on is not None:
            chosen = chosen[-1:]
        rows += [
            {
                "parameter": path,
                "effective_from": e.effective_from.isoformat(),
                "value": e.value,
                "source": e.source,
            }
            for e in chosen
        ]
    return rows


def run_summary(store: Store, run_id: int) -> pl.DataFrame:
    """Per product and status of one run: bills, accounts, total incl. tax, mean bill, hold reasons.

    For ``make demo`` and the nightly report, e.g. ``print(run_summary(store, res.run_id))``.
    """
    return store.con.sql(
        "SELECT product, status, count(*) AS bills, count(DISTINCT account) AS accounts,"
        " sum(total_inc_gst) AS total_inc_gst, round(avg(total_inc_gst), 2) AS mean_bill,"
        " string_agg(DISTINCT hold_reason, '; ') AS hold_reasons"
        " FROM bills WHERE run_id = ? GROUP BY product, status ORDER BY product, status",
        params=[run_id],
    ).pl()
