"""Price ingestion on small synthetic files: formats, time conversion, versions, bad input."""

from __future__ import annotations

import datetime as dt
import gzip
import zipfile
from pathlib import Path

import polars as pl
import pytest

from settlement.prices import financial_year, ingest_price_files, market_thresholds
from settlement.store import Store
from tariffs.errors import ConfigError

UTC = dt.UTC
PD_HEADER = "REGION,SETTLEMENTDATE,TOTALDEMAND,RRP,PERIODTYPE\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def mms_zip(path: Path, *tables: tuple[str, list[str]]) -> Path:
    """An MMS C/I/D archive holding one CSV; each table is (I record, [D records])."""
    lines = ["C,SETP.WORLD,DVD_TEST,AEMO,PUBLIC,2024/02/01,00:00:00,1,,1"]
    for head, rows in tables:
        lines += [head, *rows]
    lines.append(f'C,"END OF REPORT",{len(lines) + 1}')
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(path.stem + ".CSV", "\n".join(lines) + "\n")
    return path


def prices(store: Store) -> pl.DataFrame:
    return store.query(
        "SELECT region, interval_start, interval_minutes, price_per_mwh FROM prices ORDER BY ALL"
    ).pl()


def quarantine(store: Store) -> pl.DataFrame:
    return store.query(
        "SELECT source_file, source_line, field, reason FROM quarantine ORDER BY source_line"
    ).pl()


# --- time conversion (acceptance 2) ----------------------------------------------------------


def test_five_minute_row_is_interval_ending_nem_time(store: Store, tmp_path: Path) -> None:
    f = write(tmp_path / "pd.csv", PD_HEADER + "NSW1,2024/01/01 00:05:00,7000.5,55.25,TRADE\n")
    report = ingest_price_files(store, [f])
    assert report.files[0].status == "loaded"
    row = prices(store).row(0, named=True)
    assert row["interval_start"] == dt.datetime(2023, 12, 31, 14, 0, tzinfo=UTC)
    assert row["interval_minutes"] == 5
    assert row["price_per_mwh"] == 55.25


def test_interval_length_switches_after_2021_10_01_midnight(store: Store, tmp_path: Path) -> None:
    body = (
        "SA1,2021/09/30 23:30:00,1,40,TRADE\n"
        "SA1,2021/10/01 00:00:00,1,41,TRADE\n"  # last 30-minute interval (23:30-00:00)
        "SA1,2021/10/01 00:05:00,1,42,TRADE\n"  # first 5-minute interval (00:00-00:05)
        "SA1,2021/10/01 00:10:00,1,43,TRADE\n"
    )
    ingest_price_files(store, [write(tmp_path / "switch.csv", PD_HEADER + body)])
    got = prices(store).select("interval_start", "interval_minutes").rows()
    assert got == [
        (dt.datetime(2021, 9, 30, 13, 0, tzinfo=UTC), 30),
        (dt.datetime(2021, 9, 30, 13, 30, tzinfo=UTC), 30),
        (dt.datetime(2021, 9, 30, 14, 0, tzinfo=UTC), 5),
        (dt.datetime(2021, 9, 30, 14, 5, tzinfo=UTC), 5),
    ]


def test_thirty_minute_row_off_its_grid_is_quarantined(store: Store, tmp_path: Path) -> None:
    body = "VIC1,2020/03/01 00:30:00,1,40,TRADE\nVIC1,2020/03/01 00:35:00,1,41,TRADE\n"
    report = ingest_price_files(store, [write(tmp_path / "grid.csv", PD_HEADER + body)])
    assert report.files[0].status == "partial"
    q = quarantine(store).row(0, named=True)
    assert (q["source_line"], q["field"]) == (3, "SETTLEMENTDATE")
    assert "30-minute grid" in q["reason"]


def test_gzip_and_zip_are_recognised_by_content(store: Store, tmp_path: Path) -> None:
    text = PD_HEADER + "QLD1,2024/01/01 00:05:00,1,10,TRADE\n"
    gz = tmp_path / "no_suffix_here"
    gz.write_bytes(gzip.compress(text.encode()))
    z = tmp_path / "prices.zip"
    with zipfile.ZipFile(z, "w") as archive:
        archive.writestr("x.csv", text.replace("00:05:00,1,10", "00:10:00,1,11"))
    report = ingest_price_files(store, [gz, z])
    assert [f.status for f in report.files] == ["loaded", "loaded"]
    assert prices(store)["price_per_mwh"].to_list() == [10.0, 11.0]


# --- generic CSV -----------------------------------------------------------------------------


def test_generic_csv_default_is_nem_time(store: Store, tmp_path: Path) -> None:
    f = write(
        tmp_path / "g.csv",
        "region,interval_end,price_per_mwh\nNSW1,2024-01-01 00:30,50\nNSW1,2024-01-01 01:00,60\n",
    )
    ingest_price_files(store, [f])
    got = prices(store)
    assert got["interval_start"][0] == dt.datetime(2023, 12, 31, 14, 0, tzinfo=UTC)
    assert got["interval_minutes"].to_list() == [30, 30]  # inferred from the spacing


def test_generic_csv_london_half_hours_across_daylight_saving(store: Store, tmp_path: Path) -> None:
    # 2024-10-27: clocks go back at 02:00 BST; local interval ends 01:00 and 01:30 occur twice.
    ends = ["00:30", "01:00", "01:30", "01:00", "01:30", "02:00"]
    body = "".join(f"GB,2024-10-27 {e},{i}\n" for i, e in enumerate(ends))
    f = write(tmp_path / "gb.csv", "region,interval_end,price_per_mwh,interval_minutes\n")
    f.write_text(f.read_text() + body.replace("\n", ",30\n"))
    report = ingest_price_files(store, [f], generic_timezone="Europe/London", extra_regions=["GB"])
    assert report.files[0].status == "loaded", report.files[0].errors
    starts = prices(store)["interval_start"].to_list()
    expected = [
        dt.datetime(2024, 10, 26, 23, 0, tzinfo=UTC) + dt.timedelta(minutes=30 * i)
        for i in range(6)
    ]
    assert starts == expected  # six consecutive UTC half-hours
    assert any("non-NEM" in w for w in report.files[0].warnings)


def test_generic_csv_spring_gap_and_offsets(store: Store, tmp_path: Path) -> None:
    body = (
        "region,interval_end,price_per_mwh,interval_minutes\n"
        "GB,2024-03-31 00:30,1,30\n"
        "GB,2024-03-31T01:30:00,2,30\n"  # does not exist in Europe/London
        "GB,2024-03-31T01:00:00Z,3,30\n"  # explicit offset: fine
        "GB,2024-03-31 02:30+01:00,4,30\n"
    )
    report = ingest_price_files(
        store,
        [write(tmp_path / "gb.csv", body)],
        generic_timezone="Europe/London",
        extra_regions=("GB",),
    )
    assert report.files[0].rows_loaded == 3
    q = quarantine(store).row(0, named=True)
    assert (q["source_line"], q["field"]) == (3, "interval_end")
    got = prices(store)["interval_start"].to_list()
    assert got == [
        dt.datetime(2024, 3, 31, 0, 0, tzinfo=UTC) + dt.timedelta(minutes=30 * i) for i in range(3)
    ]


def test_unknown_time_zone_is_a_usage_error(store: Store, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Mars/Olympus"):
        ingest_price_files(store, [tmp_path], generic_timezone="Mars/Olympus")


# --- idempotency and revisions (acceptance 3) ------------------------------------------------


def test_same_bytes_again_is_a_no_op(store: Store, tmp_path: Path) -> None:
    f = write(tmp_path / "pd.csv", PD_HEADER + "NSW1,2024/01/01 00:05:00,1,10,TRADE\n")
    ingest_price_files(store, [f])
    copy = write(tmp_path / "renamed.csv", f.read_text())
    again = ingest_price_files(store, [f, copy])
    assert [r.status for r in again.files] == ["duplicate", "duplicate"]
    assert store.query("SELECT count(*) FROM price_reads_raw").fetchone() == (1,)


def test_old_prices_delivered_again_in_another_container_do_not_undo_a_revision(
    store: Store, tmp_path: Path
) -> None:
    """A price file has no version of its own (the newest file wins), so the same content
    delivered again, gzipped or with CRLF line ends, must be a duplicate: loaded, it became the
    newest version and put the revised price (55) back to the old one (50)."""
    rows = ["NSW1,2024/01/01 00:05:00,7000,{},TRADE", "NSW1,2024/01/01 00:10:00,7000,51,TRADE"]
    orig = write(tmp_path / "pd_orig.csv", PD_HEADER + "\n".join(rows).format(50) + "\n")
    revised = write(tmp_path / "pd_rev.csv", PD_HEADER + "\n".join(rows).format(55) + "\n")
    gz = tmp_path / "pd_orig_again.csv.gz"
    gz.write_bytes(gzip.compress(orig.read_bytes()))
    crlf = tmp_path / "pd_orig_crlf.csv"
    crlf.write_bytes(orig.read_bytes().replace(b"\n", b"\r\n"))
    first = ingest_price_files(store, [orig, revised]).files
    again = ingest_price_files(store, [gz, crlf]).files
    assert [f.status for f in again] == ["duplicate", "duplicate"]
    assert {f.file_id for f in again} == {first[0].file_id}
    assert prices(store)["price_per_mwh"].to_list() == [55.0, 51.0]


def test_revised_generic_csv_creates_one_new_current_version(store: Store, tmp_path: Path) -> None:
    header = "region,interval_end,price_per_mwh,interval_minutes\n"
    rows = [f"SA1,2024-02-01 00:{m:02d},{m},5\n" for m in range(5, 60, 5)]
    first = write(tmp_path / "v1.csv", header + "".join(rows))
    ingest_price_files(store, [first])
    t1 = store.query("SELECT max(ingested_at) FROM ingested_files").fetchone()[0]  # type: ignore[index]
    rows[3] = "SA1,2024-02-01 00:20,999.5,5\n"  # one price revised
    report = ingest_price_files(store, [write(tmp_path / "v2.csv", header + "".join(rows))])
    f = report.files[0]
    assert (f.status, f.rows_loaded, f.rows_duplicate) == ("loaded", 1, 10)
    assert store.query("SELECT count(*) FROM price_reads_raw").fetchone() == (12,)
    start = dt.datetime(2024, 1, 31, 14, 15, tzinfo=UTC)
    current = store.query("SELECT price_per_mwh FROM prices WHERE interval_start = ?", [start])
    assert current.fetchall() == [(999.5,)]
    old = store.query(
        "SELECT price_per_mwh FROM prices_as_of(?::TIMESTAMPTZ) WHERE interval_start = ?",
        [t1, start],
    )
    assert old.fetchall() == [(20.0,)]
    assert store.query("SELECT count(*) FROM prices").fetchone() == (11,)
    # reverting to the first price is a change again: a third version, current
    ingest_price_files(store, [write(tmp_path / "v3.csv", header + rows[3].replace("999.5", "20"))])
    assert store.query(
        "SELECT price_per_mwh FROM prices WHERE interval_start = ?", [start]
    ).fetchall() == [(20.0,)]


def test_mms_version_uses_lastchanged(store: Store, tmp_path: Path) -> None:
    head = "I,TRADING,PRICE,2,SETTLEMENTDATE,RUNNO,REGIONID,PERIODID,RRP,INVALIDFLAG,LASTCHANGED"
    late = mms_zip(
        tmp_path / "late.zip",
        (head, ["D,TRADING,PRICE,2,2022/03/01 00:05:00,1,NSW1,1,80,0,2022/03/02 10:00:00"]),
    )
    early = mms_zip(
        tmp_path / "early.zip",
        (head, ["D,TRADING,PRICE,2,2022/03/01 00:05:00,1,NSW1,1,70,0,2022/03/01 00:00:05"]),
    )
    ingest_price_files(store, [late])
    report = ingest_price_files(store, [early])  # older revision arrives later: kept, not current
    assert report.files[0].rows_loaded == 1
    assert prices(store)["price_per_mwh"].to_list() == [80.0]
    versions = store.query("SELECT version_at FROM price_reads_raw ORDER BY 1").fetchall()
    assert versions[1][0] == dt.datetime(2022, 3, 2, 0, 0, tzinfo=UTC)  # LASTCHANGED, UTC+10


# --- MMS C/I/D -------------------------------------------------------------------------------


def test_mms_file_with_several_tables(store: Store, tmp_path: Path) -> None:
    dispatch = (
        "I,DISPATCH,PRICE,4,SETTLEMENTDATE,RUNNO,REGIONID,DISPATCHINTERVAL,INTERVENTION,RRP,"
        "LASTCHANGED",
        [
            "D,DISPATCH,PRICE,4,2020/01/01 00:05:00,1,SA1,20191231241,0,60.5,2020/01/01 00:00:05",
            "D,DISPATCH,PRICE,4,2020/01/01 00:05:00,1,SA1,20191231241,1,99.9,2020/01/01 00:00:05",
        ],
    )
    other = ("I,DISPATCH,REGIONSUM,1,SETTLEMENTDATE,REGIONID", ["D,DISPATCH,REGIONSUM,1,x,SA1"])
    trading = (
        "I,TRADING,PRICE,2,SETTLEMENTDATE,RUNNO,REGIONID,PERIODID,RRP,INVALIDFLAG,LASTCHANGED",
        [
            "D,TRADING,PRICE,2,2020/01/01 00:30:00,1,SA1,1,61,0,2020/01/01 00:25:03",
            "D,TRADING,PRICE,2,2020/01/01 01:00:00,1,SA1,3,62,0,2020/01/01 00:55:03",  # bad id
        ],
    )
    f = mms_zip(tmp_path / "multi.zip", dispatch, other, trading)
    report = ingest_price_files(store, [f])
    r = report.files[0]
    assert (r.rows_loaded, r.rows_quarantined) == (2, 1)
    assert any("INTERVENTION=1" in w for w in r.warnings)
    assert any("REGIONSUM" in w for w in r.warnings)
    assert prices(store).select("interval_minutes", "price_per_mwh").rows() == [
        (5, 60.5),
        (30, 61.0),
    ]
    q = quarantine(store).row(0, named=True)
    assert (q["source_line"], q["field"]) == (9, "PERIODID")


def test_mms_thresholds_are_added_not_duplicated(store: Store, tmp_path: Path) -> None:
    head = (
        "I,MARKET_CONFIG,MARKET_PRICE_THRESHOLDS,1,EFFECTIVEDATE,VERSIONNO,VOLL,MARKETPRICEFLOOR,"
        "ADMINISTERED_PRICE_THRESHOLD,AUTHORISEDDATE,AUTHORISEDBY,LASTCHANGED"
    )
    rows = [
        "D,MARKET_CONFIG,MARKET_PRICE_THRESHOLDS,1,2018/07/01 00:00:00,1,14500,-1000,216900,,,",
        "D,MARKET_CONFIG,MARKET_PRICE_THRESHOLDS,1,2019/07/01 00:00:00,1,14700,-1000,221100,,,",
        "D,MARKET_CONFIG,MARKET_PRICE_THRESHOLDS,1,2020/07/01 00:00:00,1,15001,-1000,224600,,,",
    ]
    before = market_thresholds(store).height
    thresholds = mms_zip(tmp_path / "PUBLIC_DVD_MARKET_PRICE_THRESHOLDS_X.zip", (head, rows))
    # a 2018 price file in the same call: the thresholds archive is ingested first
    price = write(tmp_path / "a_2018.csv", PD_HEADER + "NSW1,2018/08/01 00:30:00,1,14600,TRADE\n")
    report = ingest_price_files(store, [price, thresholds])
    assert Path(report.files[0].path).name.startswith("PUBLIC_DVD_MARKET")
    t = report.files[0]
    assert (t.rows_loaded, t.rows_duplicate) == (1, 2)
    assert any("15001" in w for w in t.warnings)  # the differing 2020 entry is reported
    after = market_thresholds(store)
    assert after.height == before + 1
    new = after.filter(pl.col("effective_from") == dt.date(2018, 7, 1)).row(0, named=True)
    assert new["effective_to"] == dt.date(2019, 7, 1)
    assert new["source"] == thresholds.name
    assert new["cumulative_price_threshold"] == 216900
    p = report.files[1]
    assert (p.rows_loaded, p.rows_quarantined) == (0, 1)  # 14,600 > 14,500 cap of FY19
    assert "above the market price cap 14500" in quarantine(store)["reason"][0]


def test_market_thresholds_and_financial_year(store: Store) -> None:
    t = market_thresholds(store)
    assert t.columns[:4] == [
        "effective_from",
        "effective_to",
        "market_price_cap",
        "market_price_floor",
    ]
    fy24 = t.filter(pl.col("effective_from") == dt.date(2023, 7, 1)).row(0, named=True)
    assert (fy24["market_price_cap"], fy24["effective_to"]) == (16600, dt.date(2024, 7, 1))
    assert financial_year(dt.date(2024, 1, 1)) == 2024
    assert financial_year(dt.date(2024, 6, 30)) == 2024
    assert financial_year(dt.date(2024, 7, 1)) == 2025


# --- bad input (acceptance 5) ----------------------------------------------------------------


def test_bad_date_number_region_name_file_line_and_field(store: Store, tmp_path: Path) -> None:
    body = (
        "NSW1,2024/01/01 00:05:00,1,10,TRADE\n"
        "NSW1,2024/13/01 00:10:00,1,10,TRADE\n"
        "NSW1,2024/01/01 00:15:00,1,ten,TRADE\n"
        "XYZ1,2024/01/01 00:20:00,1,10,TRADE\n"
        "NSW1,2024/01/01 00:25:00,1,20000,TRADE\n"
        "NSW1,2024/01/01 00:30:00,1,10\n"
        "\n"
        "NSW1,2024/01/01 00:35:00,1,12,TRADE\n"
    )
    f = write(tmp_path / "bad.csv", PD_HEADER + body)
    report = ingest_price_files(store, [f])
    r = report.files[0]
    assert (r.status, r.rows_loaded, r.rows_quarantined) == ("partial", 2, 5)
    assert int(report.exit_code) == 3
    q = quarantine(store)
    assert q.select("source_line", "field").rows() == [
        (3, "SETTLEMENTDATE"),
        (4, "RRP"),
        (5, "REGION"),
        (6, "RRP"),
        (7, None),
    ]
    assert set(q["source_file"]) == {str(f)}
    assert "2024/13/01" in q["reason"][0]
    assert "'ten'" in q["reason"][1]
    assert "XYZ1" in q["reason"][2]
    assert "above the market price cap 16600" in q["reason"][3]
    assert "expected 5 fields, found 4" in q["reason"][4]
    assert r.errors[0].startswith(f"{f}:3: field 'SETTLEMENTDATE'")


def test_unknown_header_rejects_the_file(store: Store, tmp_path: Path) -> None:
    f = write(tmp_path / "weird.csv", "\nfoo,bar,price\n1,2,3\n")
    g = write(tmp_path / "extra.csv", "region,interval_end,price_per_mwh,colour\nNSW1,x,1,red\n")
    report = ingest_price_files(store, [f, g])
    assert [r.status for r in report.files] == ["rejected", "rejected"]
    q = quarantine(store)
    assert q.select("source_line", "field").rows() == [(1, "colour"), (2, "foo")]
    assert "unknown header" in report.files[0].errors[0]
    assert report.files[0].errors[0].startswith(f"{f}:2: field 'foo'")
    assert "unknown column 'colour'" in report.files[1].errors[0]
    again = ingest_price_files(store, [f])
    assert again.files[0].status == "duplicate"


def test_broken_archives_are_rejected_not_raised(store: Store, tmp_path: Path) -> None:
    gz = tmp_path / "broken.csv.gz"
    gz.write_bytes(gzip.compress(b"REGION,SETTLEMENTDATE,TOTALDEMAND,RRP\n" * 10)[:20])
    empty = write(tmp_path / "empty.csv", "")
    report = ingest_price_files(store, [gz, empty])
    assert [r.status for r in report.files] == ["rejected", "rejected"]
    assert "empty" in report.files[1].errors[0]


def test_progress_callback_is_called_per_file(store: Store, tmp_path: Path) -> None:
    f = write(tmp_path / "pd.csv", PD_HEADER + "NSW1,2024/01/01 00:05:00,1,10,TRADE\n")
    calls: list[tuple[str, int, int | None]] = []
    ingest_price_files(store, [tmp_path], progress=lambda d, a, t: calls.append((d, a, t)))
    assert calls == [(f"prices {f.name}", 1, 1)]


# --- command line ----------------------------------------------------------------------------


def test_cli_ingest_prices_exit_codes(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    db = tmp_path / "cli.duckdb"
    good = write(tmp_path / "good.csv", PD_HEADER + "NSW1,2024/01/01 00:05:00,1,10,TRADE\n")
    generic = write(
        tmp_path / "gb.csv",
        "region,interval_end,price_per_mwh\nNSW1,2024-01-01 01:00,5\nNSW1,2024-01-01 01:30,6\n",
    )
    runner = CliRunner()
    ok = runner.invoke(
        app,
        [
            "ingest",
            "prices",
            str(good),
            str(generic),
            "--db",
            str(db),
            "--json",
            "--timezone",
            "Australia/Brisbane",
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert '"rows_loaded": 3' in ok.output
    bad = write(tmp_path / "bad.csv", PD_HEADER + "NSW1,2024/01/01 00:10:00,1,oops,TRADE\n")
    partial = runner.invoke(app, ["ingest", "prices", str(bad), "--db", str(db)])
    assert partial.exit_code == 3
    zone = runner.invoke(app, ["ingest", "prices", str(good), "--db", str(db), "--timezone", "X/Y"])
    assert zone.exit_code == 2


def test_missing_file_is_reported_not_raised(store: Store, tmp_path: Path) -> None:
    report = ingest_price_files(store, [tmp_path / "nope.csv"])
    assert report.files[0].status == "rejected"
    assert "cannot read the file" in report.files[0].errors[0]
    assert int(report.exit_code) == 3


def test_mixed_folder_in_one_call_keeps_files_apart(store: Store, tmp_path: Path) -> None:
    """Chunked parsing: files of one format and header share a plan but not their results."""
    a = write(
        tmp_path / "a.csv",
        "region,interval_end,price_per_mwh\nSA1,2024-01-01 00:30,1\nSA1,2024-01-01 01:00,2\n",
    )
    b = write(
        tmp_path / "b.csv",
        "price_per_mwh,region,interval_end\n3,SA1,2024-01-01 00:30\nx,SA1,2024-01-01 01:00\n"
        "4,SA1,2024-01-01 01:30\n",
    )  # other column order, one bad price
    c = write(
        tmp_path / "c.csv",
        "region,interval_end,price_per_mwh\nSA1,2024-01-01 00:05,9\n"
        "SA1,2024-01-01 00:10,9\nSA1,2024-01-01 00:15,9\n",
    )  # 5-minute: inferred per file
    d = write(tmp_path / "d.csv", PD_HEADER + "VIC1,2024/01/01 00:05:00,1,7,TRADE\n")
    write(tmp_path / "e.csv", d.read_text())  # same bytes as d within one call
    write(tmp_path / "f.csv", "nonsense\n")
    report = ingest_price_files(store, [tmp_path])
    got = {Path(r.path).name: (r.status, r.rows_loaded, r.rows_quarantined) for r in report.files}
    assert got == {
        "a.csv": ("loaded", 2, 0),
        "b.csv": ("partial", 2, 1),
        "c.csv": ("loaded", 3, 0),
        "d.csv": ("loaded", 1, 0),
        "e.csv": ("duplicate", 0, 0),
        "f.csv": ("rejected", 0, 1),
    }
    q = quarantine(store)
    assert q.filter(pl.col("source_file") == str(b)).select("source_line", "field").rows() == [
        (3, "price_per_mwh")
    ]
    minutes = store.query(
        "SELECT DISTINCT f.path, p.interval_minutes FROM price_reads_raw p "
        "JOIN ingested_files f USING (file_id) ORDER BY 1"
    ).fetchall()
    assert minutes == [(str(a), 30), (str(b), 30), (str(c), 5), (str(d), 5)]
    # b's 00:30 price (3) is a new version of a's (1): a later file, so current
    assert store.query(
        "SELECT price_per_mwh FROM prices WHERE region = 'SA1' AND interval_minutes = 30 "
        "ORDER BY interval_start"
    ).fetchall() == [(3.0,), (2.0,), (4.0,)]
