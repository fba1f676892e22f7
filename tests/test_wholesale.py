"""Wholesale settlement: cost = kWh x DLF x MLF x RRP/1000 per interval, by NEM market day."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from settlement.customers import COLUMNS, ingest_customer_file
from settlement.meter_store import append_reads
from settlement.schema_wholesale_refs import RESOLVE_AUDIT_SQL
from settlement.store import Store, with_literals
from settlement.wholesale import market_day_bounds, settle_day

UTC = dt.UTC
DAY = dt.date(2024, 1, 10)


def _file(store: Store, kind: str) -> int:
    row = store.con.execute(
        "INSERT INTO ingested_files (file_id, kind, path, sha256, size_bytes, ingested_at, status)"
        " VALUES (nextval('file_id_seq'), ?, 'test', md5(random()::VARCHAR), 0, now(), 'loaded')"
        " RETURNING file_id",
        [kind],
    ).fetchall()
    return int(row[0][0])


def add_reads(store: Store, frame: pl.DataFrame) -> None:
    """Append long-form reads (nmi, suffix, interval_start, interval_minutes, kwh)."""
    fid = _file(store, "meter")
    store.con.register("_r", frame.to_arrow())
    append_reads(
        store.con,
        "SELECT nmi, suffix, interval_start, interval_minutes, kwh,"
        " 'A', NULL, NULL, TIMESTAMPTZ '2024-02-01 00:00:00+00', ?, 1, TRUE FROM _r",
        [fid],
    )
    store.con.unregister("_r")


def add_prices(store: Store, frame: pl.DataFrame) -> None:
    fid = _file(store, "prices")
    store.con.register("_p", frame.to_arrow())
    store.con.execute(
        "INSERT INTO price_reads_raw SELECT region, interval_start, interval_minutes,"
        " price_per_mwh, now(), ?, 1, TRUE FROM _p",
        [fid],
    )
    store.con.unregister("_p")


@pytest.fixture()
def retailer(store: Store, tmp_path: Path) -> Store:
    row = "A1,NMI1,NSW1,Australia/Sydney,1.05,0.98,monthly,1,2024-01-01,,0,0,0,0,false,false,,sh-flat,2024-01-01,"
    (tmp_path / "c.csv").write_text(",".join(COLUMNS) + "\n" + row + "\n")
    ingest_customer_file(store, tmp_path / "c.csv")
    start, _ = market_day_bounds(DAY)
    # one 30-minute import read of 2 kWh and export of 0.5 kWh at the day's first interval
    add_reads(
        store,
        pl.DataFrame(
            {
                "nmi": ["NMI1", "NMI1"],
                "suffix": ["E1", "B1"],
                "interval_start": [start, start],
                "interval_minutes": [30, 30],
                "kwh": [2.0, 0.5],
            },
            schema_overrides={"interval_start": pl.Datetime("us", "UTC")},
        ),
    )
    return store


def five_minute_prices(start: dt.datetime, values: list[float]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "region": ["NSW1"] * len(values),
            "interval_start": [start + dt.timedelta(minutes=5 * i) for i in range(len(values))],
            "interval_minutes": [5] * len(values),
            "price_per_mwh": values,
        },
        schema_overrides={"interval_start": pl.Datetime("us", "UTC")},
    )


def test_market_day_is_utc_plus_10() -> None:
    start, end = market_day_bounds(DAY)
    assert start == dt.datetime(2024, 1, 9, 14, tzinfo=UTC)
    assert end - start == dt.timedelta(days=1)


def test_cost_uses_time_weighted_mean_of_six_five_minute_prices(retailer: Store) -> None:
    start, _ = market_day_bounds(DAY)
    add_prices(retailer, five_minute_prices(start, [100, 200, -50, 0, 300, 50]))
    counts = settle_day(retailer, DAY, "r1")
    assert counts == {"rows": 2, "missing_price": 0, "estimated": 0}  # E1 and B1 reads
    row = retailer.query(
        "SELECT price_per_mwh, cost_aud, export_value_aud, status FROM wholesale_settlement"
    ).fetchall()[0]
    # mean price = (100+200-50+0+300+50)/6 = 100 $/MWh
    # cost = 2 kWh x 1.05 x 0.98 x 100 / 1000 = 0.2058 $; export value = 0.5 x 1.029 x 0.1 = 0.05145
    assert row[0] == pytest.approx(100.0, rel=1e-12)
    assert row[1] == pytest.approx(0.2058, rel=1e-12)
    assert row[2] == pytest.approx(0.05145, rel=1e-12)
    assert row[3] == "ok"


def test_missing_price_is_never_zero(retailer: Store) -> None:
    start, _ = market_day_bounds(DAY)
    add_prices(retailer, five_minute_prices(start, [100, 200, -50, 0, 300]))  # one missing
    counts = settle_day(retailer, DAY, "r1")
    assert counts["missing_price"] == 2  # both channels of the interval
    assert retailer.query("SELECT cost_aud FROM wholesale_settlement").fetchall() == [(None,)]


def test_resettling_a_day_replaces_rows_identically(retailer: Store) -> None:
    start, _ = market_day_bounds(DAY)
    add_prices(retailer, five_minute_prices(start, [100] * 6))
    settle_day(retailer, DAY, "r1")
    first = retailer.query("SELECT * FROM wholesale_settlement").fetchall()
    settle_day(retailer, DAY, "r1")
    assert retailer.query("SELECT * FROM wholesale_settlement").fetchall() == first


def test_settled_day_refers_to_its_array_and_keeps_it_when_the_day_is_rebuilt(
    retailer: Store,
) -> None:
    """Schema v14: settling stores a reference to each channel's day array, not a copy, and the
    view ``wholesale_days`` resolves it. A later reading of the day rebuilds the channel's
    ``meter_days`` rows (delete and derive); the settled row takes a copy of the array it refers
    to first, so the settlement stays what was settled (2 kWh, one read) until the day is
    settled again (2 kWh + 3 kWh, two reads)."""
    start, _ = market_day_bounds(DAY)
    add_prices(retailer, five_minute_prices(start, [100] * 12))
    settle_day(retailer, DAY, "r1")
    rows = (
        "SELECT c.suffix, w.kwh IS NULL, w.file_id IS NULL FROM wholesale_day_rows w"
        " JOIN meter_channels c USING (channel_id) ORDER BY c.suffix"
    )
    refs = [("B1", True, False), ("E1", True, False)]
    assert retailer.query(rows).fetchall() == refs
    settled = (
        "SELECT sum(kwh), count(*) FROM wholesale_values"
        " WHERE channel_id = (SELECT channel_id FROM meter_channels WHERE suffix = 'E1')"
    )
    before = retailer.query(settled).fetchall()
    assert before == [(2.0, 1)]
    add_reads(  # the day's second half-hour of E1, from a new file
        retailer,
        pl.DataFrame(
            {
                "nmi": ["NMI1"],
                "suffix": ["E1"],
                "interval_start": [start + dt.timedelta(minutes=30)],
                "interval_minutes": [30],
                "kwh": [3.0],
            },
            schema_overrides={"interval_start": pl.Datetime("us", "UTC")},
        ),
    )
    # E1's row now holds its own copy; B1's (not rebuilt) still refers to its array
    assert retailer.query(rows).fetchall() == [("B1", True, False), ("E1", False, False)]
    assert retailer.query(settled).fetchall() == before
    resolve = "SELECT count(*) FROM (" + RESOLVE_AUDIT_SQL + ")"
    lit = {"date_from": DAY, "date_to": DAY}
    assert retailer.query(with_literals(resolve, lit)).fetchall() == [(0,)]
    settle_day(retailer, DAY, "r2")
    assert retailer.query(settled).fetchall() == [(5.0, 2)]
    assert retailer.query(rows).fetchall() == refs
    # a reference that names no array is reported
    retailer.con.execute("UPDATE wholesale_day_rows SET source_line = 99 WHERE channel_id = 1")
    assert retailer.query(with_literals(resolve, lit)).fetchall() == [(1,)]


def test_thirty_minute_price_covers_five_minute_reads(store: Store, tmp_path: Path) -> None:
    row = "A1,NMI1,NSW1,Australia/Sydney,1.0,1.0,monthly,1,2020-01-01,,0,0,0,0,false,false,,sh-flat,2020-01-01,"
    (tmp_path / "c.csv").write_text(",".join(COLUMNS) + "\n" + row + "\n")
    ingest_customer_file(store, tmp_path / "c.csv")
    day = dt.date(2020, 3, 1)
    start, _ = market_day_bounds(day)
    reads = pl.DataFrame(
        {
            "nmi": ["NMI1"] * 6,
            "suffix": ["E1"] * 6,
            "interval_start": [start + dt.timedelta(minutes=5 * i) for i in range(6)],
            "interval_minutes": [5] * 6,
            "kwh": [1.0] * 6,
        },
        schema_overrides={"interval_start": pl.Datetime("us", "UTC")},
    )
    add_reads(store, reads)
    add_prices(
        store,
        pl.DataFrame(
            {
                "region": ["NSW1"],
                "interval_start": [start],
                "interval_minutes": [30],
                "price_per_mwh": [80.0],
            },
            schema_overrides={"interval_start": pl.Datetime("us", "UTC")},
        ),
    )
    settle_day(store, day, "r1")
    total = store.query("SELECT sum(cost_aud), count(*) FROM wholesale_settlement").fetchall()[0]
    assert total[0] == pytest.approx(6 * 1.0 * 80 / 1000) and total[1] == 6


def test_trading_price_wins_over_dispatch_prices_for_the_same_time(retailer: Store) -> None:
    start, _ = market_day_bounds(DAY)
    add_prices(retailer, five_minute_prices(start, [1000.0] * 6))  # dispatch, 5-minute
    add_prices(
        retailer,
        pl.DataFrame(
            {
                "region": ["NSW1"],
                "interval_start": [start],
                "interval_minutes": [30],
                "price_per_mwh": [90.0],
            },
            schema_overrides={"interval_start": pl.Datetime("us", "UTC")},
        ),
    )
    settle_day(retailer, DAY, "r1")
    assert retailer.query(
        "SELECT DISTINCT price_per_mwh, status FROM wholesale_reads"
    ).fetchall() == [(90.0, "ok")]


def test_estimated_reads_and_changed_loss_factors(retailer: Store, tmp_path: Path) -> None:
    """An E-quality read is settled and counted as estimated; after a customer file changes the
    account's DLF, resettling the day uses the new loss factor through a new terms row (the
    old one stays, so what a day was settled with is never rewritten in place)."""
    start, _ = market_day_bounds(DAY)
    fid = _file(retailer, "meter")
    append_reads(
        retailer.con,
        "SELECT 'NMI1', 'E1', ?::TIMESTAMPTZ, 30, 1.0, 'E', '52', NULL,"
        " TIMESTAMPTZ '2024-02-01 00:00:00+00', ?, 1, TRUE",
        [start + dt.timedelta(minutes=30), fid],
    )
    add_prices(retailer, five_minute_prices(start, [100.0] * 12))
    assert settle_day(retailer, DAY, "r1") == {"rows": 3, "missing_price": 0, "estimated": 1}
    rows = retailer.query(
        "SELECT suffix, interval_start, dlf, amount_aud, quality, status FROM wholesale_reads"
        " WHERE suffix = 'E1' ORDER BY interval_start"
    ).fetchall()
    # 2 kWh x 1.05 x 0.98 x 100 / 1000 = 0.2058; the estimated 1 kWh: 0.1029
    assert [(r[2], r[4], r[5]) for r in rows] == [(1.05, "A", "ok"), (1.05, "E", "estimated")]
    assert [r[3] for r in rows] == [
        pytest.approx(0.2058, rel=1e-12),
        pytest.approx(0.1029, rel=1e-12),
    ]

    row = "A1,NMI1,NSW1,Australia/Sydney,1.10,0.98,monthly,1,2024-01-01,,0,0,0,0,false,false,,sh-flat,2024-01-01,"
    (tmp_path / "c2.csv").write_text(",".join(COLUMNS) + "\n" + row + "\n")
    ingest_customer_file(retailer, tmp_path / "c2.csv")
    settle_day(retailer, DAY, "r2")
    assert retailer.query(
        "SELECT account, dlf FROM wholesale_terms ORDER BY terms_id"
    ).fetchall() == [("A1", 1.05), ("A1", 1.10)]
    # 2 kWh x 1.10 x 0.98 x 100 / 1000 = 0.2156
    cost = retailer.query(
        "SELECT amount_aud, run_id FROM wholesale_reads WHERE suffix = 'E1' AND quality = 'A'"
    ).fetchall()
    assert cost == [(pytest.approx(0.2156, rel=1e-12), "r2")]
