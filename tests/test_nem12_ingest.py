"""NEM12 ingestion: record rules, quarantine reasons, versions, idempotency, chunking, CLI."""

from __future__ import annotations

import datetime as dt
import time
import zipfile
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from cli.main import app
from settlement.nem12 import ingest_meter_files
from settlement.store import Store

UTC = dt.UTC
H100 = "100,NEM12,202401031200,MDP,RET"
B200 = "200,NMI0000001,E1,E1,E1,N1,SER1,kWh,30,"


def r300(
    day: str = "20240101", vals: list[str] | None = None, tail: str = "A,,,20240102120000,"
) -> str:
    vals = vals if vals is not None else [str(i / 100) for i in range(48)]
    return ",".join(["300", day, *vals, tail])


def nem(tmp_path: Path, lines: list[str], name: str = "f.csv", eol: str = "\n") -> Path:
    p = tmp_path / name
    p.write_bytes(eol.join(lines).encode() + eol.encode())
    return p


def reads(store: Store, view: str = "meter_reads") -> pl.DataFrame:
    return store.query(f"SELECT * FROM {view} ORDER BY nmi, suffix, interval_start").pl()


def quarantine(store: Store) -> pl.DataFrame:
    return store.query("SELECT * FROM quarantine ORDER BY source_line").pl()


# --- good files ---------------------------------------------------------------------------------


def test_interval_start_is_utc_of_market_day(store: Store, tmp_path: Path) -> None:
    res = ingest_meter_files(store, [nem(tmp_path, [H100, B200, r300(), "900"])]).files[0]
    assert (res.status, res.rows_loaded, res.rows_quarantined) == ("loaded", 48, 0)
    r = reads(store)
    # day 2024-01-01 interval 1 = [00:00, 00:30) market time = 2023-12-31 14:00 UTC
    assert r["interval_start"][0] == dt.datetime(2023, 12, 31, 14, tzinfo=UTC)
    assert r["interval_start"][47] == dt.datetime(2024, 1, 1, 13, 30, tzinfo=UTC)
    assert r["kwh"].to_list() == [i / 100 for i in range(48)]
    assert r["version_at"][0] == dt.datetime(2024, 1, 2, 2, tzinfo=UTC)  # 12:00 market
    assert r["source_line"].unique().to_list() == [3]


@pytest.mark.parametrize(
    ("unit", "value", "kwh"),
    [("Wh", "1234.5", 1234.5 / 1000), ("KWH", "0.1", 0.1), ("mwh", "0.003", 0.003 * 1000)],
)
def test_units_normalised_to_kwh(
    store: Store, tmp_path: Path, unit: str, value: str, kwh: float
) -> None:
    b200 = f"200,NMI0000001,E1,E1,E1,N1,SER1,{unit},30,"
    ingest_meter_files(store, [nem(tmp_path, [H100, b200, r300(vals=[value] * 48), "900"])])
    assert set(reads(store)["kwh"].to_list()) == {kwh}


def test_quirks_crlf_trailing_commas_blank_lines_05_no_header(store: Store, tmp_path: Path) -> None:
    lines = [
        "",
        "200,NMI0000001,E1B1,E1,E1,,SER1,KWH,05,,,,",
        r300(vals=["0.5"] * 288, tail="A,,,20240102120000,,,,,"),
        "",
        "200,NMI0000001,E1B1,B1,B1,,SER1,KWH,05,",
        r300(vals=["0.25"] * 288),
    ]
    res = ingest_meter_files(store, [nem(tmp_path, lines, eol="\r\n")]).files[0]
    assert (res.status, res.rows_loaded) == ("loaded", 576)
    assert any("no 100 header" in w for w in res.warnings)
    assert any("no 900" in w for w in res.warnings)
    r = reads(store)
    assert r.group_by("suffix").agg(pl.col("kwh").sum()).sort("suffix")["kwh"].to_list() == [
        pytest.approx(72.0),
        pytest.approx(144.0),
    ]
    assert r["interval_minutes"].unique().to_list() == [5]


def test_quality_v_resolved_per_interval_from_400(store: Store, tmp_path: Path) -> None:
    lines = [
        H100,
        B200,
        r300(tail="V,,,20240102120000,"),
        "400,1,10,A,,",
        "400,11,47,E52,,",
        "400,48,48,S53,79,",
        "900",
    ]
    ingest_meter_files(store, [nem(tmp_path, lines)])
    r = reads(store)
    got = list(zip(r["quality"], r["method"], r["reason"], strict=True))
    assert got[:10] == [("A", None, None)] * 10
    assert got[10:47] == [("E", "52", None)] * 37
    assert got[47] == ("S", "53", "79")


def test_quality_method_and_reason_from_300(store: Store, tmp_path: Path) -> None:
    ingest_meter_files(
        store, [nem(tmp_path, [H100, B200, r300(tail="F14,76,outage,20240102120000,"), "900"])]
    )
    r = reads(store)
    assert set(zip(r["quality"], r["method"], r["reason"], strict=True)) == {("F", "14", "76")}


def test_non_energy_channel_skipped_with_warning(store: Store, tmp_path: Path) -> None:
    q = "200,NMI0000001,E1Q1,2,Q1,,SER1,kVArh,30,"
    res = ingest_meter_files(store, [nem(tmp_path, [H100, B200, r300(), q, r300(), "900"])]).files[
        0
    ]
    assert (res.status, res.rows_loaded, res.rows_quarantined) == ("loaded", 48, 0)
    assert any("skipped non-energy channel NMI0000001 Q1 (unit 'kVArh')" in w for w in res.warnings)


@pytest.mark.parametrize(
    ("tail", "header", "expected"),
    [
        ("A,,,20240102120000,20240103000000", H100, dt.datetime(2024, 1, 2, 2, tzinfo=UTC)),
        ("A,,,,20240103000000", H100, dt.datetime(2024, 1, 2, 14, tzinfo=UTC)),
        ("A,,,,", H100, dt.datetime(2024, 1, 3, 2, tzinfo=UTC)),
        ("A,,,,", None, dt.datetime(1969, 12, 31, 14, tzinfo=UTC)),
    ],
)
def test_version_at_fallbacks(
    store: Store, tmp_path: Path, tail: str, header: str | None, expected: dt.datetime
) -> None:
    """UpdateDateTime, else MSATSLoadDateTime, else the 100 DateTime, else 1970-01-01 (market)."""
    lines = [x for x in (header, B200, r300(tail=tail), "900") if x]
    ingest_meter_files(store, [nem(tmp_path, lines)])
    assert reads(store)["version_at"].unique().to_list() == [expected]


# --- versions, duplicates, idempotency ----------------------------------------------------------


def _version(tmp_path: Path, name: str, upd: str, value: str) -> Path:
    return nem(tmp_path, [H100, B200, r300(vals=[value] * 48, tail=f"A,,,{upd},"), "900"], name)


def test_later_update_becomes_current_older_arriving_later_does_not(
    store: Store, tmp_path: Path
) -> None:
    ingest_meter_files(store, [_version(tmp_path, "v2.csv", "20240105000000", "2")])
    ingest_meter_files(store, [_version(tmp_path, "v3.csv", "20240109000000", "3")])
    assert set(reads(store)["kwh"]) == {3.0}
    res = ingest_meter_files(store, [_version(tmp_path, "v1.csv", "20240102000000", "1")]).files[0]
    assert res.rows_loaded == 48  # kept (append-only) ...
    assert set(reads(store)["kwh"]) == {3.0}  # ... but not current
    raw = store.query(
        "SELECT kwh, count(*) n, sum(is_current::INT) c FROM meter_reads_raw GROUP BY kwh ORDER BY kwh"
    ).fetchall()
    assert raw == [(1.0, 48, 0), (2.0, 48, 0), (3.0, 48, 48)]


def test_as_of_returns_earlier_view(store: Store, tmp_path: Path) -> None:
    ingest_meter_files(store, [_version(tmp_path, "v1.csv", "20240102000000", "1")])
    time.sleep(0.05)
    row = store.con.execute("SELECT now()").fetchone()
    assert row is not None
    between = row[0]
    time.sleep(0.05)
    ingest_meter_files(store, [_version(tmp_path, "v2.csv", "20240105000000", "2")])
    assert set(reads(store)["kwh"]) == {2.0}
    before = store.query("SELECT kwh FROM meter_reads_as_of(?::TIMESTAMPTZ)", [between]).pl()
    assert before.height == 48 and set(before["kwh"]) == {1.0}


def test_same_version_again_in_another_file_is_duplicate(store: Store, tmp_path: Path) -> None:
    ingest_meter_files(store, [_version(tmp_path, "a.csv", "20240102000000", "1")])
    b = nem(
        tmp_path,
        [H100, "", B200, r300(vals=["1"] * 48, tail="A,,,20240102000000,"), "900"],
        "b.csv",
    )
    res = ingest_meter_files(store, [b]).files[0]
    assert (res.status, res.rows_loaded, res.rows_duplicate) == ("loaded", 0, 48)
    assert store.query("SELECT count(*) FROM meter_reads_raw").fetchone() == (48,)


def test_concatenated_download_repeats_are_duplicates(store: Store, tmp_path: Path) -> None:
    once = [H100, B200, r300(), r300("20240102"), "900"]
    res = ingest_meter_files(store, [nem(tmp_path, once + once)]).files[0]
    assert (res.rows_loaded, res.rows_duplicate) == (96, 96)
    assert any("concatenated" in w for w in res.warnings)


def test_reingest_same_bytes_is_a_no_op(store: Store, tmp_path: Path) -> None:
    p = nem(tmp_path, [H100, B200, r300(), "300,2024XX01,1", "900"])
    first = ingest_meter_files(store, [p]).files[0]
    counts = store.query(
        "SELECT (SELECT count(*) FROM meter_reads_raw), (SELECT count(*) FROM quarantine), (SELECT count(*) FROM ingested_files)"
    ).fetchone()
    copy = tmp_path / "renamed.csv"
    copy.write_bytes(p.read_bytes())
    again = ingest_meter_files(store, [p, copy]).files
    assert [f.status for f in again] == ["duplicate", "duplicate"]
    assert all(f.file_id == first.file_id for f in again)
    assert (
        store.query(
            "SELECT (SELECT count(*) FROM meter_reads_raw), (SELECT count(*) FROM quarantine), (SELECT count(*) FROM ingested_files)"
        ).fetchone()
        == counts
    )


def test_zip_reads_every_member(store: Store, tmp_path: Path) -> None:
    z = tmp_path / "two.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("a.csv", "\n".join([H100, B200, r300(), "900"]))
        zf.writestr(
            "b.CSV", "\n".join([H100, B200.replace("NMI0000001", "NMI0000002"), r300(), "900"])
        )
    res = ingest_meter_files(store, [z]).files[0]
    assert (res.status, res.rows_loaded) == ("loaded", 96)
    assert reads(store)["nmi"].unique().sort().to_list() == ["NMI0000001", "NMI0000002"]


def test_zip_lines_count_through_its_members(store: Store, tmp_path: Path) -> None:
    """A zip's lines are numbered through its members in archive order, so the later member's
    reading of a day sent twice with one UpdateDateTime is the current one (the later line wins)
    and also the one ``meter_reads_as_of`` picks by line. Numbered per member, the second
    member's line 3 lost the as-of tie to the first member's line 10: the two views disagreed."""
    first = [H100, B200, *[r300(f"202312{d:02d}") for d in range(1, 8)]]
    first += [r300(vals=["1.0"] * 48), "900"]  # the day at line 10
    second = [H100, B200, r300(vals=["2.0"] * 48), "900"]  # the same day at line 3 of member b
    z = tmp_path / "two.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("a.csv", "\n".join(first) + "\n")
        zf.writestr("b.csv", "\n".join(second) + "\n")
    ingest_meter_files(store, [z])
    day = "interval_start >= TIMESTAMPTZ '2023-12-31 14:00:00+00'"
    now = store.query(f"SELECT DISTINCT kwh, source_line FROM meter_reads WHERE {day}").fetchall()
    as_of = store.query(
        f"SELECT DISTINCT kwh, source_line FROM meter_reads_as_of(now()) WHERE {day}"
    ).fetchall()
    assert now == as_of == [(2.0, 11 + 3)]  # member a has 11 lines; b's line 3 is line 14


def test_corrupt_zip_member_rejects_its_file_and_the_next_file_loads(
    store: Store, tmp_path: Path
) -> None:
    """A zip member whose data fails its CRC is a rejected file (named, with the member and the
    zip error), not a crash: the other files of the same call still load."""
    z = tmp_path / "crc.zip"
    with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("a.csv", "\n".join([H100, B200, r300(), "900"]))
    raw = bytearray(z.read_bytes())
    raw[raw.find(b"300,20240101") + 20] ^= 0x01  # one flipped bit of the member's data
    z.write_bytes(bytes(raw))
    other = nem(tmp_path, [H100, B200.replace("NMI0000001", "NMI0000009"), r300(), "900"])
    files = ingest_meter_files(store, [z, other]).files
    assert [(f.status, f.rows_loaded) for f in files] == [("rejected", 0), ("loaded", 48)]
    assert "a.csv" in files[0].errors[0] and "CRC" in files[0].errors[0]
    assert reads(store)["nmi"].unique().to_list() == ["NMI0000009"]
    assert quarantine(store)["reason"].str.contains("CRC").to_list() == [True]


def test_small_chunks_give_identical_results(tmp_path: Path) -> None:
    lines = [H100]
    for n in range(3):
        lines.append(B200.replace("NMI0000001", f"NMI000000{n}"))
        for d in range(1, 6):
            lines.append(r300(f"202401{d:02d}", tail="V,,,20240102120000,"))
            lines += ["400,1,20,A,,", "400,21,48,E52,,"]
        lines.append("300,20240107,bad")
    lines.append("900")
    p = nem(tmp_path, lines)
    out = []
    for chunk in (1 << 20, 700):
        with Store.open(":memory:") as s:
            res = ingest_meter_files(s, [p], chunk_bytes=chunk).files[0]
            out.append(
                (
                    res.rows_loaded,
                    res.rows_quarantined,
                    reads(s).drop("source_file"),
                    quarantine(s).drop("quarantined_at"),
                )
            )
    assert out[0][:2] == out[1][:2] == (3 * 5 * 48, 3)
    assert out[0][2].equals(out[1][2])
    assert out[0][3].equals(out[1][3])


# --- bad records: quarantined with line, field, reason; good records still load ------------------


@pytest.mark.parametrize(
    ("line", "rtype", "field", "reason"),
    [
        (
            r300("20240230"),
            "300",
            "IntervalDate",
            "IntervalDate '20240230' is not a valid YYYYMMDD date",
        ),
        (
            r300(vals=["1"] * 47),
            "300",
            "IntervalValue",
            "300 record has 47 interval values but the 200 record at line 2 declares 30-minute intervals (48 values a day)",
        ),
        (
            r300(vals=["1"] * 5 + ["x1"] + ["1"] * 42),
            "300",
            "IntervalValue6",
            "interval value 6 'x1' is not a number",
        ),
        (
            r300(vals=["1"] * 6 + ["-0.5"] + ["1"] * 41),
            "300",
            "IntervalValue7",
            "interval value 7 '-0.5' is negative",
        ),
        (
            r300(vals=["1"] * 47 + [""]),
            "300",
            "IntervalValue48",
            "interval value 48 '' is not a number",
        ),
        (r300(vals=["inf"] * 48), "300", "IntervalValue1", "interval value 1 'inf' is not finite"),
        (
            r300(tail="Q,,,20240102120000,"),
            "300",
            "QualityMethod",
            "QualityMethod 'Q' (field 51) is not a NEM12 quality flag",
        ),
        (
            r300(tail="A,,,202401021200,x"),
            "300",
            "MSATSLoadDateTime",
            "MSATSLoadDateTime 'x' is not YYYYMMDDhhmmss",
        ),
        (
            r300(tail="A,,,20241302120000,"),
            "300",
            "UpdateDateTime",
            "UpdateDateTime '20241302120000' is not YYYYMMDDhhmmss",
        ),
        (
            r300(tail="A,"),
            "300",
            "UpdateDateTime",
            "300 record is missing fields: 52 fields, NEM12 needs 54",
        ),
        ("300,20240101,1,2", "300", "QualityMethod", "300 record is truncated: 4 fields"),
        ("999,abc", "999", "RecordIndicator", "unknown record type '999'"),
        (
            "400,1,48,A,,",
            "400",
            "QualityMethod",
            "400 record follows the 300 record at line 3 whose quality is 'A'",
        ),
    ],
)
def test_bad_record_quarantined_good_ones_load(
    store: Store, tmp_path: Path, line: str, rtype: str, field: str, reason: str
) -> None:
    lines = [H100, B200, r300("20231231"), line, r300("20240102"), "900"]
    res = ingest_meter_files(store, [nem(tmp_path, lines)]).files[0]
    assert (res.status, res.rows_loaded, res.rows_quarantined) == ("partial", 96, 1)
    q = quarantine(store).row(0, named=True)
    assert (q["source_line"], q["record_type"], q["field"], q["raw"]) == (4, rtype, field, line)
    assert reason in q["reason"], q["reason"]


def test_300_before_any_200(store: Store, tmp_path: Path) -> None:
    res = ingest_meter_files(
        store, [nem(tmp_path, [H100, r300(), B200, r300("20240102"), "900"])]
    ).files[0]
    assert (res.status, res.rows_loaded) == ("partial", 48)
    assert quarantine(store)["reason"].to_list() == ["300 record before any 200 record"]


def test_bad_200_quarantines_its_block(store: Store, tmp_path: Path) -> None:
    bad = "200,NMI0000002,E1,E1,E1,N1,SER1,kWh,7,"
    res = ingest_meter_files(
        store, [nem(tmp_path, [H100, bad, r300(), "400,1,1,A,,", B200, r300(), "900"])]
    ).files[0]
    assert (res.status, res.rows_loaded, res.rows_quarantined) == ("partial", 48, 3)
    q = quarantine(store)
    assert q["reason"][0] == "IntervalLength '7' is not one of 1, 5, 10, 15, 30 minutes"
    assert q["reason"][1] == "300 record belongs to the 200 record at line 2, which was quarantined"


@pytest.mark.parametrize(
    ("events", "reason"),
    [
        ([], "300 record has quality V but no 400 records follow it"),
        (["400,1,20,A,,", "400,22,48,E52,,"], "cover 47 of its 48 intervals (0 covered twice)"),
        (["400,1,20,A,,", "400,20,48,E52,,"], "cover 48 of its 48 intervals (1 covered twice)"),
        (["400,1,20,A,,", "400,21,49,E52,,"], "its 400 record at line 5 is invalid"),
        (["400,1,20,A,,", "400,21,48,V,,"], "its 400 record at line 5 is invalid"),
    ],
)
def test_v_day_needs_400_cover(
    store: Store, tmp_path: Path, events: list[str], reason: str
) -> None:
    lines = [H100, B200, r300(tail="V,,,20240102120000,"), *events, r300("20240102"), "900"]
    res = ingest_meter_files(store, [nem(tmp_path, lines)]).files[0]
    assert (res.status, res.rows_loaded, res.rows_quarantined) == ("partial", 48, 1 + len(events))
    q = quarantine(store)
    assert reason in q.filter(pl.col("record_type") == "300")["reason"][0]
    # every quarantined line names its field, the 400s of the refused 300 record too
    assert q["field"].is_not_null().all(), q


# --- whole-file refusals and the shared invalid examples ----------------------------------------


def test_nem13_refused(store: Store, tmp_path: Path) -> None:
    p = nem(
        tmp_path,
        [
            "100,NEM13,200401101030,MDA1,Ret1",
            "250,VABC005890,11,1,11,11,M,E,1,20031005093055,A,,,2,20040107100333,A,,,1,kWh,20040407,20040108100333,20040108091133",
            "900",
        ],
    )
    res = ingest_meter_files(store, [p]).files[0]
    assert res.status == "rejected"
    q = quarantine(store).row(0, named=True)
    assert q["source_line"] is None and "NEM13" in q["reason"]
    assert store.query("SELECT count(*) FROM meter_reads_raw").fetchone() == (0,)


def test_not_nem12_refused(store: Store, tmp_path: Path) -> None:
    p = nem(tmp_path, ["REGION,SETTLEMENTDATE,TOTALDEMAND,RRP", "NSW1,2024/01/01 00:05:00,7000,50"])
    res = ingest_meter_files(store, [p]).files[0]
    assert res.status == "rejected" and "no 300 records" in res.errors[0]
    assert quarantine(store).height == 1


INVALID = {
    "Example_NEM12_15min_200_30min_300.csv": (
        "partial",
        "300 record has 48 interval values but the 200 record at line 2 declares 15-minute intervals (96 values a day)",
    ),
    "Example_NEM12_15min_200_30min_400.csv": (
        "partial",
        "the 400 records of this V-quality 300 record cover 48 of its 96 intervals",
    ),
    "Example_NEM12_30min_200_15min_300.csv": (
        "partial",
        "300 record has 96 interval values but the 200 record at line 2 declares 30-minute intervals (48 values a day)",
    ),
    "Example_NEM12_30min_200_15min_400.csv": (
        "partial",
        "300 record has 96 interval values but the 200 record at line 2 declares 30-minute intervals (48 values a day)",
    ),
    "Example_NEM12_empty.csv": (
        "rejected",
        "not a NEM12 file with interval data: no 300 records found",
    ),
    "Example_NEM12_incomplete_interval.csv": (
        "partial",
        "300 record has 0 interval values but the 200 record at line 2 declares 30-minute intervals",
    ),
    "Example_NEM12_missing_header.csv": (
        "loaded",
        "no 100 header record (first record is '200'); assumed NEM12",
    ),
    "Example_NEM12_powercor.csv": (
        "loaded",
        "48 readings appear more than once in this file with the same version",
    ),
    "Example_NEM12_powercor.csv.zip": (
        "loaded",
        "Example_NEM12_powercor.csv: 0 header (100) and 2 end (900) records: concatenated files",
    ),
    "Example_NEM12_powercor_missing_fields.csv": (
        "partial",
        "300 record is missing fields: 52 fields, NEM12 needs 54",
    ),
    "Example_empty_file.csv": ("rejected", "file is empty (0 bytes)"),
}


@pytest.mark.shared
@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_examples_give_specific_messages(
    name: str, store: Store, shared_data: Path
) -> None:
    """Each broken AEMO example gets a specific message: a quarantine reason for a bad record or
    a refused file, or (for quirks we accept: missing 100, concatenated downloads) a warning."""
    path = shared_data / "nem12" / "aemo-examples" / "invalid" / name
    status, text = INVALID[name]
    res = ingest_meter_files(store, [path]).files[0]
    assert res.status == status, (res.status, res.errors, res.warnings)
    reasons = quarantine(store)["reason"].to_list()
    assert any(text in m for m in [*reasons, *res.warnings, *res.errors]), (reasons, res.warnings)
    if status != "loaded":
        assert reasons, "a refused or partial file leaves quarantine rows"
    assert sorted(INVALID) == sorted(p.name for p in path.parent.iterdir())


@pytest.mark.shared
def test_real_household_and_ausnet_totals(store: Store, shared_data: Path) -> None:
    """PROVENANCE.md: household 61,056 readings, E1 560.5 kWh, B1 302.9 kWh; AusNet 17,520 readings, 2,720.2 kWh."""
    d = shared_data / "nem12"
    rep = ingest_meter_files(
        store, [d / "household-5min-2023-redacted.csv", d / "ausnet-vic-30min-2014.csv"]
    )
    assert [(f.status, f.rows_loaded) for f in rep.files] == [
        ("loaded", 61_056),
        ("loaded", 17_520),
    ]
    tot = dict(
        store.query(
            "SELECT nmi || suffix, round(sum(kwh), 1) FROM meter_reads GROUP BY 1"
        ).fetchall()
    )
    assert tot == {"(redacted)E1": 560.5, "(redacted)B1": 302.9, "1111111111E1": 2720.2}


# --- CLI ----------------------------------------------------------------------------------------


def test_cli_exit_codes(tmp_path: Path) -> None:
    good = nem(tmp_path, [H100, B200, r300(), "900"], "good.csv")
    bad = nem(tmp_path, [H100, B200, r300(vals=["x"] * 48), "900"], "bad.csv")
    db = str(tmp_path / "cli.duckdb")
    runner = CliRunner()
    ok = runner.invoke(app, ["ingest", "meter", str(good), "--db", db, "--json"])
    assert ok.exit_code == 0, ok.output
    assert '"rows_loaded": 48' in ok.output
    q = runner.invoke(app, ["ingest", "meter", str(bad), "--db", db])
    assert q.exit_code == 3, q.output


def test_progress_reports_every_byte_of_a_csv(store: Store, tmp_path: Path) -> None:
    lines = [H100, B200] + [r300(f"202401{d:02d}") for d in range(1, 29)] + ["900"]
    p = nem(tmp_path, lines)
    calls: list[tuple[str, int, int | None]] = []
    ingest_meter_files(
        store, [p], progress=lambda d, a, t: calls.append((d, a, t)), chunk_bytes=2000
    )
    assert len(calls) > 3
    assert sum(a for _, a, _ in calls) == p.stat().st_size
    assert {(d, t) for d, _, t in calls} == {("f.csv", p.stat().st_size)}


@pytest.mark.parametrize("seed", range(12))
def test_random_revision_sequences_match_the_version_rule(tmp_path: Path, seed: int) -> None:
    """Random files re-sending, revising and back-dating days (some twice in one file, with
    equal, older and newer UpdateDateTimes) leave exactly the readings the documented rule picks:
    per (nmi, suffix, interval) the maximum by (version_at, file order, line) of the readings
    that are not duplicates (same key, version, kWh and quality as an earlier one). Exercises the
    direct, newer-version and exact load paths against a plain-Python oracle."""
    import random

    rng = random.Random(seed)
    stamps = ["20240105000000", "20240107000000", "20240109000000"]
    nmis = ["NMI0000001", "NMI0000002"]
    kept: dict[tuple[str, int, str, float, str], None] = {}  # non-duplicate readings (oracle)
    best: dict[tuple[str, int], tuple[str, int, int, float]] = {}
    paths: list[Path] = []
    for f in range(5):
        lines = [H100]
        for nmi in rng.sample(nmis, rng.randint(1, 2)):
            lines.append(f"200,{nmi},E1,E1,E1,N1,SER1,kWh,30,")
            for _ in range(rng.randint(1, 4)):
                day = rng.randint(1, 3)
                stamp = rng.choice(stamps)
                value = rng.choice(["1", "2", "3"])
                quality = rng.choice(["A", "A", "E52"])
                lines.append(r300(f"2024010{day}", [value] * 48, f"{quality},,,{stamp},"))
                line_no = len(lines)
                for i in range(48):
                    key = (nmi, day * 100 + i)
                    dup = (nmi, day * 100 + i, stamp, float(value), quality[0])
                    if dup in kept:
                        continue
                    kept[dup] = None
                    cand = (stamp, f, line_no, float(value))
                    if key not in best or cand[:3] > best[key][:3]:
                        best[key] = cand
        lines.append("900")
        paths.append(nem(tmp_path, lines, f"f{f}.csv"))
    with Store.open(tmp_path / "s.duckdb") as store:
        for p in paths:  # one call per file: file order = ingestion order
            ingest_meter_files(store, [p])
        got = store.query(
            "SELECT nmi, day(t) * 100 + (hour(t) * 60 + minute(t)) // 30 AS k, kwh, version_at"
            " FROM (SELECT *, interval_start AT TIME ZONE 'Etc/GMT-10' AS t FROM meter_reads)"
            " ORDER BY nmi, k"
        ).fetchall()
        raw = store.query("SELECT count(*) FROM meter_reads_raw").fetchall()[0][0]
    want = [
        (
            nmi,
            k,
            kwh,
            dt.datetime.strptime(stamp, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
            - dt.timedelta(hours=10),
        )
        for (nmi, k), (stamp, _, _, kwh) in sorted(best.items())
    ]
    assert got == want
    assert raw == len(kept)
