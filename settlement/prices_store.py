"""Writing checked price rows and MMS thresholds into the store; reading the thresholds back.

Versioning rule (see ``data/formats/prices.md``): a row is a *duplicate* (not inserted) when the
store already holds the same (region, interval_start, interval_minutes, price) with the same
``version_at``, or when the current stored price for that interval is the same price (a price is
versioned only when it changes; files without a version stamp get their ingest time). Every other
row is inserted; ``is_current`` is then recomputed for the affected intervals only: the current row
is the one with the greatest (version_at, file_id, source_line).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from settlement.store import Store

KEY = ["region", "interval_start", "interval_minutes"]


@dataclass
class PriceBatch:
    """A file's checked rows, prepared off the store (worker thread) for :func:`store_price_rows`.

    ``arrow`` is the insert table for the common case: no stored row overlaps and no interval
    repeats within the file, so every row is new and current.
    """

    rows: pl.DataFrame
    repeats: bool
    regions: list[str]
    lo: dt.datetime | None
    hi: dt.datetime | None
    arrow: pa.Table


def price_batch(rows: pl.DataFrame, repeats: bool) -> PriceBatch:
    """Bundle ``rows`` (``ROW_COLUMNS``) with what the store step needs."""
    return PriceBatch(
        rows,
        repeats,
        rows["region"].unique().sort().to_list(),
        rows["interval_start"].min(),  # type: ignore[arg-type]
        rows["interval_start"].max(),  # type: ignore[arg-type]
        _insert_table(rows.with_columns(is_current=pl.lit(True))).to_arrow(),
    )


def _existing(store: Store, batch: PriceBatch) -> pl.DataFrame:
    """Stored rows for the regions and time span of the batch (zone maps prune the scan)."""
    marks = ", ".join("?" for _ in batch.regions)
    return store.con.execute(
        "SELECT region, interval_start, interval_minutes, price_per_mwh, version_at, is_current "
        f"FROM price_reads_raw WHERE interval_start BETWEEN ? AND ? AND region IN ({marks})",
        [batch.lo, batch.hi, *batch.regions],
    ).pl()


def _new_versions(rows: pl.DataFrame, old: pl.DataFrame) -> pl.DataFrame:
    """The rows to insert, with ``is_current`` set against the stored current rows ``old``."""
    rows = rows.with_columns(
        _conflict=pl.col("price_per_mwh").min().over(KEY) != pl.col("price_per_mwh").max().over(KEY)
    )
    # identical lines within the file: keep the last (it decides the current price on ties)
    rows = rows.sort("source_line").unique([*KEY, "price_per_mwh", "version_at"], keep="last")
    if old.height:
        exact = old.select(*KEY, "price_per_mwh", "version_at").unique()
        rows = rows.join(exact, on=[*KEY, "price_per_mwh", "version_at"], how="anti")
        current = old.filter("is_current").select(*KEY, "price_per_mwh").unique()
        same = rows.filter(~pl.col("_conflict")).join(current, on=[*KEY, "price_per_mwh"])
        rows = rows.join(same.select(*KEY), on=KEY, how="anti") if same.height else rows
    winner = (
        pl.int_range(pl.len()).sort_by(["version_at", "source_line"], descending=True).over(KEY)
        == 0
    )
    rows = rows.with_columns(_winner=winner)
    if old.height:
        old_current = old.filter("is_current").select(*KEY, pl.col("version_at").alias("_old_v"))
        rows = rows.join(old_current, on=KEY, how="left")
    else:
        rows = rows.with_columns(_old_v=pl.lit(None, rows.schema["version_at"]))
    beats = pl.col("_old_v").is_null() | (pl.col("version_at") >= pl.col("_old_v"))
    return rows.with_columns(
        is_current=pl.col("_winner") & beats,
        _replaces=pl.col("_winner") & beats & pl.col("_old_v").is_not_null(),
    )


def _insert_table(new: pl.DataFrame) -> pl.DataFrame:
    return new.select(
        "region",
        "interval_start",
        pl.col("interval_minutes").cast(pl.Int16),
        "price_per_mwh",
        "version_at",
        pl.col("source_line").cast(pl.Int32),
        "is_current",
    )


def _insert(store: Store, file_id: int, table: pa.Table) -> None:
    """Append ``table`` (:func:`_insert_table` columns); null ``version_at`` = the ingest time."""
    store.con.register("_price_new", table)
    try:
        store.con.execute(
            "INSERT INTO price_reads_raw SELECT region, interval_start, interval_minutes, "
            "price_per_mwh, coalesce(version_at, (SELECT ingested_at FROM ingested_files "
            "WHERE file_id = $fid)), $fid, source_line, is_current FROM _price_new",
            {"fid": file_id},
        )
    finally:
        store.con.unregister("_price_new")


def _supersede(store: Store, file_id: int, replaced: pl.DataFrame) -> None:
    """Clear ``is_current`` of the older rows of intervals where this file's row is current."""
    store.con.register("_price_replaced", replaced.to_arrow())
    try:
        store.con.execute(
            "UPDATE price_reads_raw AS p SET is_current = FALSE FROM _price_replaced k "
            "WHERE p.is_current AND p.file_id <> ? AND p.interval_start BETWEEN ? AND ? "
            "AND p.region = k.region AND p.interval_start = k.interval_start "
            "AND p.interval_minutes = k.interval_minutes",
            [file_id, replaced["interval_start"].min(), replaced["interval_start"].max()],
        )
    finally:
        store.con.unregister("_price_replaced")


def store_price_rows(store: Store, file_id: int, batch: PriceBatch) -> tuple[int, int]:
    """Insert the new versions among the batch's rows; return (loaded, duplicate).

    Call inside the file's transaction, after :func:`~settlement.ingest_common.register_file`.
    ``version_at`` null means "no version in the file": the file's ``ingested_at`` is used.
    """
    rows = batch.rows
    if rows.height == 0:
        return 0, 0
    old = _existing(store, batch)
    if old.height == 0 and not batch.repeats:  # all new, all current: the common case
        _insert(store, file_id, batch.arrow)
        return rows.height, 0
    if old.height:  # versions are compared: give version-less rows their ingest time now
        found = store.con.execute(
            "SELECT ingested_at FROM ingested_files WHERE file_id = ?", [file_id]
        ).fetchone()
        rows = rows.with_columns(pl.col("version_at").fill_null(found[0] if found else None))
    new = _new_versions(rows, old)
    _insert(store, file_id, _insert_table(new).to_arrow())
    replaced = new.filter("_replaces").select(KEY)
    if replaced.height:
        _supersede(store, file_id, replaced)
    return new.height, rows.height - new.height


def market_thresholds(store: Store) -> pl.DataFrame:
    """The market price cap/floor history, one row per entry, ordered by ``effective_from``.

    Columns: effective_from, effective_to (exclusive; an entry holds until the next one starts or
    its own effective_to, whichever is earlier; null = open), market_price_cap,
    market_price_floor, cumulative_price_threshold, administered_price_cap [$/MWh; CPT in $],
    source.
    """
    return store.con.sql(
        """
        SELECT effective_from,
               CASE WHEN nxt IS NULL THEN effective_to
                    ELSE least(coalesce(effective_to, nxt), nxt) END AS effective_to,
               market_price_cap, market_price_floor, cumulative_price_threshold,
               administered_price_cap, source
        FROM (SELECT *, lead(effective_from) OVER (ORDER BY effective_from) AS nxt
              FROM market_price_thresholds)
        ORDER BY effective_from
        """
    ).pl()


def store_mms_thresholds(
    store: Store, rows: pl.DataFrame, source: str
) -> tuple[int, int, list[str]]:
    """Insert MMS MARKET_PRICE_THRESHOLDS entries whose effective_from is new; report the rest.

    Existing entries are never edited. Returns (inserted, already present, warnings naming each
    entry whose cap or floor differs from the stored one).
    """
    existing = market_thresholds(store).select(
        "effective_from",
        pl.col("market_price_cap").alias("_cap"),
        pl.col("market_price_floor").alias("_floor"),
        pl.col("source").alias("_source"),
        pl.col("cumulative_price_threshold").alias("_cpt"),
    )
    joined = rows.join(existing, on="effective_from", how="left")
    present = joined.filter(pl.col("_cap").is_not_null())
    differ = present.filter(
        (pl.col("market_price_cap") != pl.col("_cap"))
        | (pl.col("market_price_floor") != pl.col("_floor"))
    )
    warnings = [
        f"MARKET_PRICE_THRESHOLDS from {r['effective_from']}: file says cap {r['market_price_cap']}"
        f" floor {r['market_price_floor']}, the store keeps cap {r['_cap']} floor {r['_floor']} "
        f"({r['_source']})"
        for r in differ.iter_rows(named=True)
    ]
    if present.height > differ.height:
        warnings.append(
            f"{present.height - differ.height} MARKET_PRICE_THRESHOLDS entr(y/ies) match the "
            "stored cap and floor (kept as stored)"
        )
    cpt = present.filter(
        pl.col("cumulative_price_threshold").is_not_null()
        & pl.col("cumulative_price_threshold").ne_missing(pl.col("_cpt"))
    )
    if cpt.height:
        dates = ", ".join(str(d) for d in cpt["effective_from"].to_list())
        warnings.append(
            f"the file gives a cumulative price threshold the store lacks or differs from for "
            f"{dates} (kept as stored)"
        )
    new = joined.filter(pl.col("_cap").is_null()).select(
        "effective_from", "market_price_cap", "market_price_floor", "cumulative_price_threshold"
    )
    if new.height:
        store.con.register("_thr_new", new.to_arrow())
        try:
            store.con.execute(
                """
                INSERT INTO market_price_thresholds
                SELECT n.effective_from,
                       (SELECT min(d) FROM (SELECT effective_from AS d FROM market_price_thresholds
                                            UNION ALL SELECT effective_from FROM _thr_new) u
                        WHERE u.d > n.effective_from),
                       n.market_price_cap, n.market_price_floor, n.cumulative_price_threshold,
                       NULL, ?
                FROM _thr_new n
                """,
                [source],
            )
        finally:
            store.con.unregister("_thr_new")
    return new.height, present.height, warnings
