"""The store opens, migrates forward once, and refuses a second writer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from settlement.schema import LATEST_VERSION
from settlement.store import Store


def test_new_store_is_migrated_to_latest(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.duckdb") as s:
        assert s.schema_version() == LATEST_VERSION
    with Store.open(tmp_path / "s.duckdb") as s:
        assert s.migrate() == []  # nothing left to apply


def test_thresholds_seeded_with_domain_caps(store: Store) -> None:
    caps = store.con.execute(
        "SELECT year(effective_from), market_price_cap FROM market_price_thresholds ORDER BY 1"
    ).fetchall()
    assert dict(caps)[2023] == 16600.0  # FY24 cap, DOMAIN.md section 3
    assert dict(caps)[2024] == 17500.0


def test_second_writer_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    with Store.open(db):
        code = (
            "import sys; from settlement.store import Store\n"
            "from tariffs.errors import LockHeldError\n"
            f"try:\n    Store.open({str(db)!r})\nexcept LockHeldError:\n    sys.exit(5)\n"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
        assert proc.returncode == 5, proc.stderr.decode()


def test_a_missing_middle_migration_is_applied(tmp_path: Path) -> None:
    """A file that has v1 and v3 but not v2 gets v2 (migrations are applied by set)."""
    from settlement.schema import MIGRATIONS

    db = tmp_path / "s.duckdb"
    with Store.open(db) as s:
        s.con.execute("DELETE FROM schema_version WHERE version = 2")
        s.con.execute("DROP VIEW audit_feed_in_gst")  # one of v2's objects, recreated below
        s.con.execute("DROP VIEW audit_duplicate_bills; DROP VIEW audit_bill_line_sums")
        s.con.execute("DROP TABLE bill_lines; DROP TABLE bills; DROP TABLE product_versions")
        s.con.execute("DROP TABLE billing_runs; DROP SEQUENCE bill_run_seq")
    with Store.open(db) as s:
        versions = [
            r[0] for r in s.con.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()
        ]
        assert versions == sorted(m.version for m in MIGRATIONS)
        assert s.con.execute("SELECT count(*) FROM bills").fetchall() == [(0,)]


def _store_at(db: Path, version: int) -> duckdb.DuckDBPyConnection:
    """A store file built by the first ``version`` migrations only (as an older fairshare left
    it), open on a plain connection."""
    from settlement.schema import MIGRATIONS

    con = duckdb.connect(str(db))
    con.execute("SET TimeZone = 'UTC'")
    con.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, description VARCHAR,"
        " applied_at TIMESTAMPTZ)"
    )
    for m in MIGRATIONS[:version]:
        con.execute(m.sql)
        con.execute("INSERT INTO schema_version VALUES (?, ?, now())", [m.version, m.description])
    return con


def test_v3_meter_reads_migrate_to_numeric_storage(tmp_path: Path) -> None:
    """A v3 store's readings (text columns per reading) move to v4's numeric ``meter_values``
    unchanged: every column of ``meter_reads_raw`` and ``meter_reads`` reads back the same, and
    a later NEM12 ingest continues the dictionaries."""
    from settlement.nem12 import ingest_meter_files

    db = tmp_path / "v3.duckdb"
    con = _store_at(db, 3)
    con.execute(
        "INSERT INTO ingested_files (file_id, kind, path, sha256, size_bytes, ingested_at, status)"
        " VALUES (nextval('file_id_seq'), 'meter', 'a.csv', 'x1', 0, now(), 'loaded'),"
        " (nextval('file_id_seq'), 'meter', 'b.csv', 'x2', 0, now(), 'loaded')"
    )
    rows = [  # two channels, a revision (is_current false), a V day's per-interval flags
        (
            "4100000001",
            "E1",
            "2024-01-01 00:00",
            30,
            0.5,
            "A",
            None,
            None,
            "2024-01-02",
            1,
            3,
            False,
        ),
        (
            "4100000001",
            "E1",
            "2024-01-01 00:00",
            30,
            0.7,
            "F",
            "14",
            None,
            "2024-01-05",
            2,
            3,
            True,
        ),
        ("4100000001", "E1", "2024-01-01 00:30", 30, 0.2, "S", "53", "9", "2024-01-05", 2, 3, True),
        (
            "4100000001",
            "B1",
            "2024-01-01 00:00",
            30,
            0.0,
            "A",
            None,
            None,
            "2024-01-02",
            1,
            4,
            True,
        ),
        ("4100000002", "E1", "2024-01-01 00:00", 5, 1.25, "E", "52", "1", "2024-01-02", 1, 9, True),
    ]
    con.executemany(
        "INSERT INTO meter_reads_raw VALUES (?, ?, ?::TIMESTAMPTZ, ?, ?, ?, ?, ?, ?::TIMESTAMPTZ,"
        " ?, ?, ?)",
        rows,
    )
    cols = (
        "nmi, suffix, interval_start, interval_minutes, kwh, quality, method, reason, version_at,"
        " file_id, source_line, is_current"
    )
    before = con.execute(f"SELECT {cols} FROM meter_reads_raw ORDER BY ALL").fetchall()
    current = con.execute("SELECT * FROM meter_reads ORDER BY ALL").fetchall()
    con.close()
    with Store.open(db) as s:
        assert s.schema_version() == LATEST_VERSION
        assert s.query(f"SELECT {cols} FROM meter_reads_raw ORDER BY ALL").fetchall() == before
        assert s.query("SELECT * FROM meter_reads ORDER BY ALL").fetchall() == current
        assert s.query("SELECT count(*) FROM meter_channels").fetchall() == [(3,)]
        assert s.query("SELECT count(*) FROM meter_flags").fetchall() == [(4,)]
        nem12 = tmp_path / "next.csv"
        nem12.write_text(
            "100,NEM12,202402010000,MDP1,R1\n"
            "200,4100000002,E1B1,E1,E1,N1,M1,kWh,30,\n"
            "300,20240102," + ",".join(["0.1"] * 48) + ",A,,,20240103000000,\n"
            "200,4100000003,E1,E1,E1,N1,M1,kWh,30,\n"
            "300,20240102," + ",".join(["0.2"] * 48) + ",A,,,20240103000000,\n"
            "900\n"
        )
        rep = ingest_meter_files(s, [nem12])
        assert rep.files[0].rows_loaded == 96
        # the known channel keeps its id, the new one gets the next; flag 'A' is reused
        assert s.query(
            "SELECT nmi, suffix, channel_id FROM meter_channels ORDER BY channel_id"
        ).fetchall() == [
            ("4100000001", "B1", 1),
            ("4100000001", "E1", 2),
            ("4100000002", "E1", 3),
            ("4100000003", "E1", 4),
        ]
        assert s.query("SELECT count(*) FROM meter_flags").fetchall() == [(4,)]
        assert s.query(
            "SELECT nmi, count(*), sum(kwh) FROM meter_reads WHERE interval_start >= "
            "'2024-01-01 14:00:00+00' GROUP BY nmi ORDER BY nmi"
        ).fetchall() == [
            ("4100000002", 48, pytest.approx(4.8)),
            ("4100000003", 48, pytest.approx(9.6)),
        ]


def test_v4_bills_migrate_without_key_indexes(tmp_path: Path) -> None:
    """A v4 store's bills and lines move to v5's tables unchanged, without the primary-key
    indexes; a duplicate that the keys refused is now reported by the uniqueness audit views."""
    db = tmp_path / "v4.duckdb"
    con = _store_at(db, 4)
    con.execute(
        "INSERT INTO bills VALUES ('A/p/2024-07-01/r1', 1, 'A', 'N1', DATE '2024-07-01',"
        " DATE '2024-08-01', DATE '2024-07-01', DATE '2024-08-01', 'p', 'v1', 'AUD', 10.00, 1.00,"
        " 11.00, 'issued', NULL, 0, false, TIMESTAMPTZ '2024-08-02 00:00:00+00'),"
        " ('B/p/2024-07-01/r1', 1, 'B', 'N2', DATE '2024-07-01', DATE '2024-08-01',"
        " DATE '2024-07-01', DATE '2024-08-01', 'p', 'v1', 'AUD', NULL, NULL, NULL, 'held',"
        " 'missing', 0, false, TIMESTAMPTZ '2024-08-02 00:00:00+00')"
    )
    con.execute(
        "INSERT INTO bill_lines VALUES ('A/p/2024-07-01/r1', 1, 'Energy', 'peak', 20.0, 'kWh',"
        " 0.5, 10.00, 1.00, 11.00, true, DATE '2024-07-01', DATE '2024-07-31', 1488, 'x')"
    )
    with pytest.raises(duckdb.ConstraintException):
        con.execute("INSERT INTO bill_lines SELECT * FROM bill_lines")
    before = [con.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in ("bills", "bill_lines")]  # fmt: skip
    con.close()
    with Store.open(db) as s:
        assert s.schema_version() == LATEST_VERSION
        after = [s.con.execute("SELECT * EXCLUDE (kind) FROM bills ORDER BY 1").fetchall(),
                 s.con.execute("SELECT * FROM bill_lines ORDER BY 1").fetchall()]  # fmt: skip
        assert after == before
        # v15: every bill stored before is a cycle's bill
        assert s.con.execute("SELECT DISTINCT kind FROM bills").fetchall() == [("cycle",)]
        keys = s.con.execute(
            "SELECT count(*) FROM duckdb_constraints() WHERE table_name IN ('bills', 'bill_lines')"
            " AND constraint_type IN ('PRIMARY KEY', 'UNIQUE')"
        ).fetchone()
        assert keys == (0,)
        s.con.execute("INSERT INTO bill_lines SELECT * FROM bill_lines")  # no longer refused
        assert s.con.execute("SELECT * FROM audit_duplicate_bill_lines").fetchall() == [
            ("A/p/2024-07-01/r1", 1, 2)
        ]
        assert s.con.execute("SELECT count(*) FROM audit_duplicate_bill_ids").fetchone() == (0,)


def test_with_literals_writes_typed_literals_and_refuses_anything_else() -> None:
    import datetime as dt

    from settlement.store import with_literals

    t = dt.datetime(2024, 8, 30, 14, tzinfo=dt.UTC)
    sql = with_literals("SELECT $date_from, $date, $t", {"date": dt.date(2024, 1, 2),
                        "date_from": dt.date(2024, 8, 31), "t": t})  # fmt: skip
    assert sql == (
        "SELECT DATE '2024-08-31', DATE '2024-01-02', TIMESTAMPTZ '2024-08-30T14:00:00+00:00'"
    )
    assert duckdb.sql(sql).fetchone() == (dt.date(2024, 8, 31), dt.date(2024, 1, 2), t)
    with pytest.raises(TypeError, match="naive"):
        with_literals("$t", {"t": dt.datetime(2024, 1, 1)})
    with pytest.raises(TypeError, match="must be a date"):
        with_literals("$t", {"t": "2024-01-01'; DROP TABLE bills; --"})  # type: ignore[dict-item]


def test_v5_wholesale_reads_migrate_to_numeric_storage(tmp_path: Path) -> None:
    """A v5 store's settled reads (fifteen columns per read, seven of them text) move to v6's
    ``wholesale_values`` and its dictionaries: every column of ``wholesale_reads`` and of
    ``wholesale_settlement`` reads back the same, the computed cost included, bit for bit."""
    db = tmp_path / "v5.duckdb"
    con = _store_at(db, 5)
    con.execute(
        "INSERT INTO meter_channels VALUES (1, '4100000001', 'E1'), (2, '4100000001', 'B1'),"
        " (3, '4100000002', 'E1')"
    )
    con.execute(
        "INSERT INTO meter_flags VALUES (1, 'A', NULL, NULL), (2, 'E', '52', '1'),"
        " (3, 'F', '14', NULL)"
    )
    con.execute(
        "INSERT INTO settled_days VALUES (DATE '2024-01-01', 'run-a', 7),"
        " (DATE '2024-01-02', 'run-b', 9)"
    )
    # account, nmi, suffix, region, start, minutes, day, kWh, DLF, MLF, price, quality, status;
    # the cost is computed as v5's settlement did, and is NULL where the price is missing
    a1, a2 = ("A1", "4100000001"), ("A2", "4100000002")
    lf1, lf2 = (1.0451, 0.9937), (1.02, 1.001)
    reads = [
        (*a1, "E1", "NSW1", "2024-01-01 00:00", 30, "2024-01-01", 0.7, *lf1, 87.31, "A", "ok"),
        (*a1, "B1", "NSW1", "2024-01-01 00:00", 30, "2024-01-01", 1.3, *lf1, 87.31, "A", "ok"),
        (
            *a1,
            "E1",
            "NSW1",
            "2024-01-01 00:30",
            30,
            "2024-01-01",
            0.2,
            *lf1,
            -41.5,
            "E",
            "estimated",
        ),
        (
            *a2,
            "E1",
            "VIC1",
            "2024-01-01 00:00",
            5,
            "2024-01-01",
            0.1,
            *lf2,
            None,
            "F",
            "missing_price",
        ),
        (*a2, "E1", "VIC1", "2024-01-02 00:00", 5, "2024-01-02", 0.3, *lf2, 14200.0, "A", "ok"),
    ]
    con.executemany(
        "INSERT INTO wholesale_reads SELECT ?, ?, ?, ?, ?::TIMESTAMPTZ, ?, ?::DATE, k, d, m, p,"
        " k * d * m * p / 1000, ?, ?, 'run-' || (CASE WHEN ?::DATE = DATE '2024-01-01'"
        " THEN 'a' ELSE 'b' END) FROM (SELECT ?::DOUBLE, ?::DOUBLE, ?::DOUBLE, ?::DOUBLE) t(k, d, m, p)",
        [(*r[:7], *r[11:], r[6], *r[7:11]) for r in reads],
    )
    before = [
        con.execute(f"SELECT * FROM {v} ORDER BY ALL").fetchall()
        for v in ("wholesale_reads", "wholesale_settlement")
    ]
    assert before[0][0][11] is not None and len(before[0]) == 5
    con.close()
    with Store.open(db) as s:
        assert s.schema_version() == LATEST_VERSION
        after = [
            s.con.execute(f"SELECT * FROM {v} ORDER BY ALL").fetchall()
            for v in ("wholesale_reads", "wholesale_settlement")
        ]
        assert after == before
        assert s.con.execute("SELECT count(*) FROM wholesale_values").fetchone() == (5,)
        assert s.con.execute("SELECT count(*) FROM wholesale_terms").fetchone() == (2,)
        assert s.con.execute(
            "SELECT count(*), count(price_per_mwh) FROM wholesale_prices"
        ).fetchone() == (4, 3)


def test_v10_settled_reads_migrate_to_day_arrays(tmp_path: Path) -> None:
    """v11 moves ``wholesale_values`` into ``wholesale_days``: a whole 30-minute day (48 reads,
    one of them estimated) becomes one array with a flag per slot, a day with two 5-minute reads
    an array of 288 slots with those two filled; the ``wholesale_values`` view then gives back
    every stored read, the same values, starts and flags."""
    db = tmp_path / "v10.duckdb"
    con = _store_at(db, 10)
    con.execute("INSERT INTO meter_flags VALUES (1, 'A', NULL, NULL), (2, 'E', '52', '1')")
    con.execute(
        "INSERT INTO wholesale_values SELECT 7, 3, TIMESTAMPTZ '2023-12-31 14:00:00+00'"
        " + to_minutes(30 * i), 30, DATE '2024-01-01', i / 8, CASE WHEN i = 5 THEN 2 ELSE 1 END"
        " FROM range(48) t(i)"
    )
    con.execute(
        "INSERT INTO wholesale_values VALUES"
        " (8, 4, TIMESTAMPTZ '2024-01-01 14:05:00+00', 5, DATE '2024-01-02', 0.25, 1),"
        " (8, 4, TIMESTAMPTZ '2024-01-01 15:00:00+00', 5, DATE '2024-01-02', 0.5, 1)"
    )
    before = con.execute("SELECT * FROM wholesale_values ORDER BY ALL").fetchall()
    con.close()
    with Store.open(db) as s:
        assert s.con.execute("SELECT * FROM wholesale_values ORDER BY ALL").fetchall() == before
        # v14: the rows settled before keep their own arrays (no reference to resolve)
        assert s.con.execute(
            "SELECT count(*) FILTER (kwh IS NULL OR file_id IS NOT NULL) FROM wholesale_day_rows"
        ).fetchall() == [(0,)]
        days = s.con.execute(
            "SELECT terms_id, len(kwh), list_count(kwh), flag_id, flags IS NULL, kwh[2], kwh[13]"
            " FROM wholesale_days ORDER BY terms_id"
        ).fetchall()
    # 14:05 UTC is 00:05 market time: slot 1 (0-based), the second element; 15:00 is slot 12
    assert days == [(7, 48, 48, 1, False, 0.125, 1.5), (8, 288, 2, 1, True, 0.25, 0.5)]


def test_a_stage_detail_may_not_overwrite_the_stage_figures(store: Store) -> None:
    """``stage`` records seconds, CPU, memory and status; a detail of the same name would
    silently replace one (an audit stage once logged its audits' times as ``seconds``)."""
    from settlement.runs import StageLog, stage

    log = StageLog("r1", 1)
    with stage(store, log, "fine") as d:
        d["files"] = 2
    assert log.stages["fine"]["files"] == 2 and log.stages["fine"]["status"] == "done"
    with (
        pytest.raises(ValueError, match=r"'clash'.*\['seconds'\]"),
        stage(store, log, "clash") as d,
    ):
        d["seconds"] = {"an_audit": 0.1}
    assert log.stages["clash"]["status"] == "failed"
    assert isinstance(log.stages["clash"]["seconds"], float)


def test_a_read_only_command_refuses_an_older_store_and_migrate_brings_it_up(
    tmp_path: Path,
) -> None:
    """A store left at v15 by an older fairshare: a read-only command (which cannot migrate)
    stops with a usage error naming ``fairshare migrate``, not a missing-column crash;
    ``fairshare migrate`` applies v16 and says so; run again, it has nothing to apply."""
    import json

    from typer.testing import CliRunner

    from cli.main import app

    db = tmp_path / "s.duckdb"
    with Store.open(db) as s:
        s.con.execute("ALTER TABLE meter_days DROP COLUMN kwh_sum")
        s.con.execute("DELETE FROM schema_version WHERE version = 16")
    runner = CliRunner()
    res = runner.invoke(
        app, ["audit", "--from", "2024-07-01", "--to", "2024-07-31", "--db", str(db)]
    )
    assert res.exit_code == 2, res.output
    assert "schema version 15" in res.output and "fairshare migrate" in res.output
    res = runner.invoke(app, ["migrate", "--db", str(db), "--json"])
    assert res.exit_code == 0, res.output
    done = json.loads(res.stdout)
    assert done["schema_version"] == LATEST_VERSION == 16
    assert [a["version"] for a in done["applied"]] == [16]
    res = runner.invoke(app, ["migrate", "--db", str(db)])
    assert res.exit_code == 0 and "nothing to apply" in res.output
    res = runner.invoke(
        app, ["audit", "--from", "2024-07-01", "--to", "2024-07-31", "--db", str(db)]
    )
    assert res.exit_code == 0, res.output
    # a DuckDB file that is not a store
    duckdb.connect(str(tmp_path / "other.duckdb")).close()
    res = runner.invoke(app, ["status", "--db", str(tmp_path / "other.duckdb")])
    assert res.exit_code == 2 and "not a fairshare store" in res.output
