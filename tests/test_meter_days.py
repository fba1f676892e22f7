"""``meter_days``: readings as day arrays (schema v10), kept in step with ``meter_values``.

The layout is checked by hand on small files (slot positions, market day, flags of a V day,
versions); the derivation the migration uses is checked against what ingestion wrote; the
random revision tests in ``test_nem12_resolution`` and the property tests in
``test_nem12_property`` hold the two tables to the same current readings.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from unittest.mock import patch

import pytest

from settlement.meter_days import (
    DAYS_MATCH_VALUES_SQL,
    FULL_DERIVE_SQL,
    refresh_all_days,
    refresh_days,
)
from settlement.meter_store import append_reads
from settlement.nem12 import ingest_meter_files
from settlement.store import Store

H100 = "100,NEM12,202401031200,MDP,RET"


def b200(minutes: int, nmi: str = "NMI0000001") -> str:
    return f"200,{nmi},E1,E1,E1,N1,SER1,kWh,{minutes},"


def r300(day: str, values: list[str], updated: str, quality: str = "A") -> str:
    return ",".join(["300", day, *values, f"{quality},,,{updated},"])


def write(tmp_path: Path, name: str, *lines: str) -> Path:
    p = tmp_path / name
    p.write_text("\n".join([H100, *lines, "900"]) + "\n")
    return p


def days(store: Store) -> list[tuple[object, ...]]:
    return store.query(
        "SELECT market_day, interval_minutes, kwh, flags IS NULL, version_at, source_line,"
        " is_current FROM meter_days ORDER BY market_day, file_id, source_line"
    ).fetchall()


def test_a_300_record_is_one_row_with_its_reads_in_slot_order(store: Store, tmp_path: Path) -> None:
    """Slot i of a 30-minute day is the read starting i x 30 minutes after 00:00 UTC+10, i.e.
    14:00 UTC the day before: slot 0 of 1 Jan 2024 is 2023-12-31 14:00 UTC."""
    values = [f"{i / 100:.2f}" for i in range(48)]
    p = write(tmp_path, "a.csv", b200(30), r300("20240101", values, "20240102000000"))
    ingest_meter_files(store, [p])
    [(day, minutes, kwh, no_flags, version, line, current)] = days(store)
    assert (day, minutes, no_flags, line, current) == (dt.date(2024, 1, 1), 30, True, 3, True)
    assert kwh == [i / 100 for i in range(48)]
    # the UpdateDateTime is NEM time (UTC+10): 2024-01-02 00:00 +10 = 2024-01-01 14:00 UTC
    assert version == dt.datetime(2024, 1, 1, 14, tzinfo=dt.UTC)
    first = store.query(
        "SELECT kwh FROM meter_reads WHERE interval_start = TIMESTAMPTZ '2023-12-31 14:00:00+00'"
    ).fetchall()
    assert first == [(kwh[0],)]
    assert store.query(DAYS_MATCH_VALUES_SQL).fetchall() == []


def test_a_v_day_keeps_a_flag_per_slot(store: Store, tmp_path: Path) -> None:
    """Quality V with 400 records: slots 1-10 A, 11-47 E52, 48 S53 (1-based, as in the file)."""
    p = write(
        tmp_path,
        "v.csv",
        b200(30),
        r300("20240101", ["1"] * 48, "20240102000000", quality="V"),
        "400,1,10,A,,",
        "400,11,47,E52,,",
        "400,48,48,S53,79,",
    )
    ingest_meter_files(store, [p])
    [(flags, flag_id)] = store.query("SELECT flags, flag_id FROM meter_days").fetchall()
    quality = dict(store.query("SELECT flag_id, quality FROM meter_flags").fetchall())
    assert [quality[f] for f in flags] == ["A"] * 10 + ["E"] * 37 + ["S"]
    assert quality[flag_id] == "A"  # the first reading's flag
    assert store.query(DAYS_MATCH_VALUES_SQL).fetchall() == []


def test_a_revision_leaves_the_old_day_superseded(store: Store, tmp_path: Path) -> None:
    """1 Jan at 5 minutes, then revised at 30 minutes by a later UpdateDateTime: two rows, the
    30-minute one current; re-sending the old version afterwards changes nothing current."""
    five = write(tmp_path, "five.csv", b200(5), r300("20240101", ["0.125"] * 288, "20240105000000"))
    thirty = write(
        tmp_path, "thirty.csv", b200(30), r300("20240101", ["0.5"] * 48, "20240107000000")
    )
    late = write(tmp_path, "late.csv", b200(5), r300("20240101", ["0.25"] * 288, "20240106000000"))
    ingest_meter_files(store, [five, thirty, late])
    got = [(m, len(k), k[0], cur) for _, m, k, _, _, _, cur in days(store)]
    assert sorted(got) == [(5, 288, 0.125, False), (5, 288, 0.25, False), (30, 48, 0.5, True)]
    assert store.query(DAYS_MATCH_VALUES_SQL).fetchall() == []


def test_the_migration_derives_what_ingestion_wrote(store: Store, tmp_path: Path) -> None:
    """Deleting ``meter_days`` and deriving it again from ``meter_values`` (the v10 migration)
    gives back the same rows, versions included, for days loaded by every ingestion path:
    new days, a newer version of a day, and a day sent twice in one file (exact path)."""
    a = write(
        tmp_path,
        "a.csv",
        b200(30),
        r300("20240101", ["0.5"] * 48, "20240105000000"),
        r300("20240102", ["0.25"] * 48, "20240105000000"),
        b200(30, "NMI0000002"),
        r300("20240101", ["0.75"] * 48, "20240105000000", quality="E52"),
    )
    b = write(
        tmp_path,
        "b.csv",
        b200(30),
        r300("20240101", ["0.6"] * 48, "20240106000000"),
        r300("20240103", ["0.1"] * 48, "20240106000000"),
        r300("20240103", ["0.2"] * 48, "20240106000000"),
    )
    ingest_meter_files(store, [a, b])
    written = store.query("SELECT * FROM meter_days ORDER BY ALL").fetchall()
    assert len(written) == 6  # 1 Jan twice for NMI 1, 2 Jan, NMI 2's 1 Jan, 3 Jan twice
    store.con.execute("DELETE FROM meter_days")
    store.con.execute(FULL_DERIVE_SQL)
    assert store.query("SELECT * FROM meter_days ORDER BY ALL").fetchall() == written
    # the migration's batches (here one channel-day each, cut between channels) give the same
    store.con.execute("DELETE FROM meter_days")
    with patch("settlement.meter_days.BATCH_DAYS", 1):
        assert refresh_all_days(store.con) == 4  # NMI 1: 1, 2, 3 Jan; NMI 2: 1 Jan
    assert store.query("SELECT * FROM meter_days ORDER BY ALL").fetchall() == written


def test_fixture_reads_get_day_rows_too(store: Store) -> None:
    """Readings appended in SQL (benchmark and test fixtures) are derived into day rows; a day
    with a missing half-hour has a NULL in that slot."""
    store.con.execute(
        "INSERT INTO ingested_files (file_id, kind, path, sha256, size_bytes, ingested_at,"
        " status) VALUES (nextval('file_id_seq'), 'meter', 'fixture', 'x', 0, now(), 'loaded')"
    )
    append_reads(
        store.con,
        "SELECT 'NMI0000009', 'E1', TIMESTAMPTZ '2024-01-01 14:00:00+00' + to_minutes(30 * i),"
        " 30, i / 10, 'A', NULL, NULL, now(), 1, 1, true FROM range(48) t(i) WHERE i <> 5",
    )
    [(day, kwh, n)] = store.query("SELECT market_day, kwh, n_reads FROM meter_days").fetchall()
    assert day == dt.date(2024, 1, 2)
    assert kwh[4:7] == [0.4, None, 0.6] and len(kwh) == 48
    assert n == 47  # schema v12: the slots with a reading
    assert refresh_days(store.con, [1]) == 1  # rebuilding is idempotent
    assert store.query("SELECT count(*) FROM meter_days").fetchall() == [(1,)]
    assert store.query(DAYS_MATCH_VALUES_SQL).fetchall() == []


def _store_before(tmp_path: Path, column: str, version: int) -> Path:
    """A store with two day rows, left as it was before migration ``version`` added
    ``meter_days.<column>``: a whole NEM12 day of 0.5 kWh half-hours and a day of readings
    0.0, 0.1, .. 4.7 without half-hour 5 (appended as rows)."""
    path = tmp_path / "old.duckdb"
    with Store.open(path) as s:
        ingest_meter_files(s, [write(tmp_path, "a.csv", b200(30),
                                     r300("20240101", ["0.5"] * 48, "20240105000000"))])  # fmt: skip
        append_reads(
            s.con,
            "SELECT 'NMI0000009', 'E1', TIMESTAMPTZ '2024-01-01 14:00:00+00' + to_minutes(30 * i),"
            " 30, i / 10, 'A', NULL, NULL, now(), 1, 1, true FROM range(48) t(i) WHERE i <> 5",
        )
        s.con.execute(f"ALTER TABLE meter_days DROP COLUMN {column}")  # a name written here
        s.con.execute("DELETE FROM schema_version WHERE version = ?", [version])
    return path


def test_v12_counts_the_readings_of_existing_day_rows(tmp_path: Path) -> None:
    """A store at v11 (no ``n_reads``) migrates to v12 with every row's count of readings:
    48 for a whole day from NEM12, 47 for a day with a missing half-hour."""
    with Store.open(_store_before(tmp_path, "n_reads", 12)) as s:
        got = s.query("SELECT len(kwh), n_reads FROM meter_days ORDER BY ALL").fetchall()
        assert got == [(48, 47), (48, 48)]
        assert s.query(DAYS_MATCH_VALUES_SQL).fetchall() == []


def test_v16_stores_the_sum_of_each_existing_day_row(tmp_path: Path) -> None:
    """A store at v15 (no ``kwh_sum``) migrates to v16 with every row's sum of readings: 24.0
    for a whole day of 0.5 kWh half-hours, 112.3 for the day of readings 0.0, 0.1, .. 4.7
    without the 0.5 of half-hour 5; a file ingested after fills it too (48 x 0.25 = 12.0)."""
    with Store.open(_store_before(tmp_path, "kwh_sum", 16)) as s:
        got = s.query("SELECT n_reads, round(kwh_sum, 9) FROM meter_days ORDER BY ALL").fetchall()
        # sum(i / 10 for i in range(48) if i != 5) = 112.8 - 0.5
        assert got == [(47, 112.3), (48, 24.0)]
        assert s.query(DAYS_MATCH_VALUES_SQL).fetchall() == []
        ingest_meter_files(s, [write(tmp_path, "b.csv", b200(30),
                                     r300("20240102", ["0.25"] * 48, "20240105000000"))])  # fmt: skip
        sums = s.query("SELECT round(kwh_sum, 9) FROM meter_days ORDER BY 1").fetchall()
        assert sums == [(12.0,), (24.0,), (112.3,)]
        assert s.query(DAYS_MATCH_VALUES_SQL).fetchall() == []


def test_span_sums_equal_the_readings_of_each_span(tmp_path: Path) -> None:
    """``span_sums_sql`` (the energy audits' metered kWh: stored sums for whole days, slices
    for cut days, element by element for V days) equals a sum over ``meter_reads`` of the
    readings starting in each span, quality N left out. Spans cut at market midnights, at
    Sydney's summer midnight (13:00 UTC), Adelaide's (13:30 UTC), inside one day, ending at
    23:59 market time, over a V day with N intervals, a whole N day and a 5-minute channel."""
    from settlement.meter_days import span_sums_sql

    vals = [str(round(0.1 + 0.01 * i, 2)) for i in range(48)]
    five = [str(round(0.02 + 0.001 * i, 3)) for i in range(288)]
    path = write(
        tmp_path, "a.csv",
        b200(30),
        r300("20240101", vals, "20240105000000"),
        r300("20240102", vals, "20240105000000", quality="V"),
        "400,1,10,A,,", "400,11,20,N,,", "400,21,48,E52,,",
        r300("20240103", vals, "20240105000000", quality="N"),
        r300("20240104", vals, "20240105000000"),
        b200(5, "NMI0000002"),
        r300("20240102", five, "20240105000000"),
        r300("20240103", five, "20240105000000"),
    )  # fmt: skip
    utc = dt.UTC
    bounds = [
        dt.datetime(2023, 12, 31, 14, tzinfo=utc),  # market midnight, 1 Jan
        dt.datetime(2024, 1, 1, 13, tzinfo=utc),  # Sydney (AEDT) midnight, 2 Jan
        dt.datetime(2024, 1, 1, 13, 30, tzinfo=utc),  # Adelaide (ACDT) midnight, 2 Jan
        dt.datetime(2024, 1, 2, 3, 17, tzinfo=utc),  # inside 2 Jan, off the grid
        dt.datetime(2024, 1, 2, 13, 59, tzinfo=utc),  # 23:59 market time, 2 Jan
        dt.datetime(2024, 1, 2, 14, tzinfo=utc),  # market midnight, 3 Jan
        dt.datetime(2024, 1, 3, 13, 30, tzinfo=utc),  # Adelaide midnight, 4 Jan
        dt.datetime(2024, 1, 4, 14, tzinfo=utc),  # market midnight, 5 Jan
    ]
    with Store.open(tmp_path / "s.duckdb") as s:
        ingest_meter_files(s, [path])
        channels = [r[0] for r in s.query("SELECT channel_id FROM meter_channels").fetchall()]
        spans = [
            (len(channels) * i + j, ch, a, b)
            for i, (a, b) in enumerate((a, b) for a in bounds for b in bounds if a < b)
            for j, ch in enumerate(channels)
        ]
        s.con.execute(
            "CREATE TEMP TABLE _sp (span_no INTEGER, channel_id INTEGER,"
            " utc_from TIMESTAMPTZ, utc_to TIMESTAMPTZ)"
        )
        s.con.executemany("INSERT INTO _sp VALUES (?, ?, ?, ?)", spans)
        n_ids = "(SELECT list(flag_id) FROM meter_flags WHERE quality = 'N')"
        got = dict(
            s.query(
                "WITH sp AS (SELECT *, "
                + n_ids
                + " AS n_ids FROM _sp) "
                + span_sums_sql("sp", "span_no", "s.n_ids")
            ).fetchall()
        )
        want = dict(
            s.query(
                "SELECT p.span_no, sum(r.kwh) FILTER (r.quality <> 'N')"
                " FROM _sp p JOIN meter_channels c USING (channel_id)"
                " JOIN meter_reads r ON r.nmi = c.nmi AND r.suffix = c.suffix"
                " AND r.interval_start >= p.utc_from AND r.interval_start < p.utc_to"
                " GROUP BY ALL"
            ).fetchall()
        )
    # a span with no reading has no row, or a row of 0 kWh (a cut day's empty slice)
    assert len(spans) == 56 and len(want) >= 40
    for no, _, a, b in spans:
        assert got.get(no, 0.0) == pytest.approx(want.get(no) or 0.0, abs=1e-9), (no, a, b)
