"""Helpers for billing tests: write rows straight into the store's ``_raw`` tables."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl

from settlement.meter_store import append_reads
from settlement.store import Store
from tariffs.product import Product, parse_product

REPO = Path(__file__).resolve().parents[1]
PRODUCTS = REPO / "data" / "products"


def product(name: str) -> Product:
    """A sample product from data/products."""
    path = PRODUCTS / f"{name}.toml"
    return parse_product(path.read_text(), str(path))


def add_file(store: Store, kind: str, tag: str) -> int:
    """Register a fake ingested file and return its id."""
    row = store.con.execute(
        "INSERT INTO ingested_files (file_id, kind, path, sha256, size_bytes, ingested_at, status)"
        " VALUES (nextval('file_id_seq'), ?, ?, ?, 0, now(), 'loaded') RETURNING file_id",
        [kind, f"test/{tag}", f"sha-{tag}-{datetime.now().timestamp()}"],
    ).fetchall()
    return int(row[0][0])


def add_customer(
    store: Store,
    account: str,
    enrolments: list[tuple[str, date, date | None]],
    *,
    nmi: str | None = None,
    move_in: date = date(2020, 1, 1),
    move_out: date | None = None,
    cycle: str = "monthly",
    cycle_day: int = 1,
    concession: bool = False,
    dlf: float = 1.0,
    mlf: float = 1.0,
    tz: str = "Australia/Sydney",
    solar_kw: float = 0.0,
    region: str = "NSW1",
) -> None:
    """One customer with its enrolments."""
    fid = add_file(store, "customers", account)
    store.con.execute(
        "INSERT INTO customers_raw VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, 0, false, ?,"
        " NULL, ?, 1)",
        [account, nmi or f"NMI{account}", region, tz, dlf, mlf, cycle, cycle_day, move_in,
         move_out, solar_kw, concession, fid],
    )  # fmt: skip
    for i, (prod, start, end) in enumerate(enrolments):
        store.con.execute(
            "INSERT INTO enrolments_raw VALUES (?, ?, ?, ?, ?, ?)",
            [account, prod, start, end, fid, i + 2],
        )


def half_hours(start_local: date, days: int, tz: str = "Australia/Sydney") -> pl.Series:
    """UTC starts of every 30-minute interval of ``days`` local days from ``start_local``."""
    lo = pl.Series([datetime.combine(start_local, datetime.min.time())]).dt.replace_time_zone(tz)
    hi = pl.Series(
        [datetime.combine(start_local + timedelta(days=days), datetime.min.time())]
    ).dt.replace_time_zone(tz)
    return pl.datetime_range(
        lo.dt.convert_time_zone("UTC")[0],
        hi.dt.convert_time_zone("UTC")[0],
        "30m",
        closed="left",
        eager=True,
        time_zone="UTC",
    )


def add_reads(
    store: Store,
    nmi: str,
    suffix: str,
    starts: pl.Series,
    kwh: float | list[float],
    *,
    minutes: int = 30,
    quality: str = "A",
) -> None:
    """Reads on one channel."""
    fid = add_file(store, "meter", f"{nmi}-{suffix}-{starts[0]}")
    values = kwh if isinstance(kwh, list) else [kwh] * len(starts)
    frame = pl.DataFrame(
        {"interval_start": starts, "kwh": values, "line": range(len(starts))}
    ).with_columns(pl.col("interval_start").dt.convert_time_zone("UTC"))
    store.con.register("_r", frame.to_arrow())
    append_reads(
        store.con,
        "SELECT ?::VARCHAR, ?::VARCHAR, interval_start, ?::SMALLINT, kwh, ?::VARCHAR, NULL, NULL,"
        " now(), ?::BIGINT, line::INTEGER, true FROM _r",
        [nmi, suffix, minutes, quality, fid],
    )
    store.con.unregister("_r")


def add_prices(
    store: Store, starts: pl.Series, price: float | list[float], *, minutes: int = 30
) -> None:
    """NSW1 prices [$/MWh] at the given UTC starts."""
    fid = add_file(store, "prices", f"p-{starts[0]}-{len(starts)}")
    values = price if isinstance(price, list) else [price] * len(starts)
    frame = pl.DataFrame({"interval_start": starts, "p": values, "line": range(len(starts))})
    store.con.register("_p", frame.to_arrow())
    store.con.execute(
        "INSERT INTO price_reads_raw SELECT 'NSW1', interval_start, ?, p, now(), ?, line, true"
        " FROM _p",
        [minutes, fid],
    )
    store.con.unregister("_p")


def test_half_hours_counts_dst_days() -> None:
    # 2024-04-07 (AEST returns, 25 h) and 2024-10-06 (AEDT starts, 23 h) in Sydney
    assert len(half_hours(date(2024, 4, 7), 1)) == 50
    assert len(half_hours(date(2024, 10, 6), 1)) == 46
