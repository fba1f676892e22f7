"""Customer file ingestion: validation, quarantine with line and field, versions, idempotency."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from settlement.customers import COLUMNS, ingest_customer_file
from settlement.store import Store
from tariffs.errors import ExitCode

HEADER = ",".join(COLUMNS)
GOOD = [
    # account switches product on 2024-03-15 (two enrolment rows)
    "A1,4102000001,NSW1,Australia/Sydney,1.04,0.99,monthly,5,2024-01-01,,6.6,13.5,5,20,true,false,VPP-A,sh-flat,2024-01-01,2024-03-15",
    "A1,4102000001,NSW1,Australia/Sydney,1.04,0.99,monthly,5,2024-01-01,,6.6,13.5,5,20,true,false,VPP-A,dyn-passthrough,2024-03-15,",
    "A2,4102000002,NSW1,Australia/Sydney,1.05,1.00,quarterly,1,2024-02-10,2024-09-01,0,0,0,0,false,true,,sh-tou,2024-02-10,",
]


def write(tmp_path: Path, rows: list[str], name: str = "customers.csv") -> Path:
    p = tmp_path / name
    p.write_text("\n".join([HEADER, *rows]) + "\n")
    return p


def test_good_file_loads_accounts_and_enrolments(store: Store, tmp_path: Path) -> None:
    report = ingest_customer_file(store, write(tmp_path, GOOD))
    assert report.exit_code == ExitCode.OK
    assert report.rows_loaded == 3
    accounts = store.query(
        "SELECT account, battery_kwh, vpp_contract, concession FROM customers ORDER BY 1"
    ).fetchall()
    assert accounts == [("A1", 13.5, "VPP-A", False), ("A2", 0.0, None, True)]
    enr = store.query(
        "SELECT account, product, effective_from::VARCHAR, effective_to::VARCHAR FROM enrolments ORDER BY 1, 3"
    ).fetchall()
    assert enr == [
        ("A1", "sh-flat", "2024-01-01", "2024-03-15"),
        ("A1", "dyn-passthrough", "2024-03-15", None),
        ("A2", "sh-tou", "2024-02-10", None),
    ]


def test_rerun_is_a_no_op(store: Store, tmp_path: Path) -> None:
    p = write(tmp_path, GOOD)
    ingest_customer_file(store, p)
    again = ingest_customer_file(store, p)
    assert again.files[0].status == "duplicate"
    assert store.query("SELECT count(*) FROM customers_raw").fetchall() == [(2,)]


def test_bad_rows_quarantined_with_line_and_field_good_rows_load(
    store: Store, tmp_path: Path
) -> None:
    bad_dlf = GOOD[2].replace(
        "A2,4102000002,NSW1,Australia/Sydney,1.05", "A3,4102000003,NSW1,Australia/Sydney,abc"
    )
    bad_tz = GOOD[2].replace("A2", "A4").replace("Australia/Sydney", "Mars/Olympus")
    report = ingest_customer_file(store, write(tmp_path, [*GOOD, bad_dlf, bad_tz]))
    assert report.exit_code == ExitCode.QUARANTINED
    q = store.query("SELECT source_line, field, reason FROM quarantine ORDER BY 1").fetchall()
    assert q == [
        (5, "dlf", "abc is not a number"),
        (6, "timezone", "Mars/Olympus is not an IANA time zone"),
    ]
    assert store.query("SELECT count(*) FROM customers").fetchall() == [(2,)]


def test_inconsistent_or_overlapping_account_is_quarantined_whole(
    store: Store, tmp_path: Path
) -> None:
    overlap = [GOOD[0].replace("2024-03-15", "2024-04-01"), GOOD[1], GOOD[2]]
    report = ingest_customer_file(store, write(tmp_path, overlap))
    assert report.files[0].rows_quarantined == 2  # both A1 rows
    assert store.query("SELECT DISTINCT field FROM quarantine").fetchall() == [("product_from",)]
    assert store.query("SELECT account FROM customers").fetchall() == [("A2",)]


def test_an_account_with_a_bad_row_is_quarantined_whole_and_keeps_its_definition(
    store: Store, tmp_path: Path
) -> None:
    """One bad row of an account quarantines every row of it: loading the rest would redefine
    the account (the newest file defines it) from part of its rows, here dropping its second
    enrolment."""
    ingest_customer_file(store, write(tmp_path, GOOD, "v1.csv"))
    bad_second = GOOD[1].replace(",1.04,0.99,", ",9.99x,0.99,")
    report = ingest_customer_file(store, write(tmp_path, [GOOD[0], bad_second, GOOD[2]], "v2.csv"))
    assert report.files[0].rows_quarantined == 2  # both A1 rows, the good one with a reason
    q = store.query("SELECT source_line, field, reason FROM quarantine ORDER BY 1").fetchall()
    assert q == [
        (2, "account", "another row of account A1 (line 3) was quarantined; an account loads "
         "whole or not at all"),
        (3, "dlf", "9.99x is not a number"),
    ]  # fmt: skip
    enr = store.query(
        "SELECT account, product, effective_from::VARCHAR FROM enrolments ORDER BY 1, 3"
    ).fetchall()
    assert enr == [
        ("A1", "sh-flat", "2024-01-01"),
        ("A1", "dyn-passthrough", "2024-03-15"),
        ("A2", "sh-tou", "2024-02-10"),
    ]


def test_a_line_with_extra_fields_is_quarantined_with_its_line(
    store: Store, tmp_path: Path
) -> None:
    """A line with more fields than the header is one bad line (quarantined with its line
    number), not an unreadable file: the other accounts load."""
    report = ingest_customer_file(store, write(tmp_path, [GOOD[0], GOOD[1], GOOD[2] + ",extra"]))
    assert (report.files[0].status, report.files[0].rows_loaded) == ("partial", 2)
    q = store.query("SELECT source_line, field, reason FROM quarantine").fetchall()
    assert q == [(4, "field 21", "the line has 21 fields, the header 20")]
    assert store.query("SELECT account FROM customers").fetchall() == [("A1",)]


def test_blanks_around_a_time_zone_are_ignored_as_around_any_field(
    store: Store, tmp_path: Path
) -> None:
    padded = GOOD[2].replace(",Australia/Sydney,", ", Australia/Sydney ,")
    report = ingest_customer_file(store, write(tmp_path, [padded]))
    assert report.files[0].rows_quarantined == 0
    assert store.query("SELECT timezone FROM customers").fetchall() == [("Australia/Sydney",)]


def test_later_file_redefines_account(store: Store, tmp_path: Path) -> None:
    ingest_customer_file(store, write(tmp_path, GOOD, "v1.csv"))
    moved = GOOD[2].replace("2024-09-01", "2024-07-01")
    ingest_customer_file(store, write(tmp_path, [moved], "v2.csv"))
    rows = store.query("SELECT account, move_out::VARCHAR FROM customers ORDER BY 1").fetchall()
    assert rows == [("A1", None), ("A2", "2024-07-01")]


def test_missing_column_rejects_file_with_clear_error(store: Store, tmp_path: Path) -> None:
    p = tmp_path / "c.csv"
    p.write_text("account,nmi\nA1,123\n")
    report = ingest_customer_file(store, p)
    assert report.files[0].status == "rejected"
    assert (
        "missing column(s)" in report.files[0].errors[0] and "c.csv:1" in report.files[0].errors[0]
    )


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("cycle_day", "31", "31 is not a day 1..28"),
        ("billing_cycle", "weekly", "weekly is not monthly or quarterly"),
        ("region", "WA1", "WA1 is not a NEM region"),
        ("move_in", "2024-13-01", "2024-13-01 is not a YYYY-MM-DD date"),
        ("ev", "maybe", "maybe is not true/false"),
        ("mlf", "2.5", "2.5 is outside [0.7, 1.3]"),
    ],
)
def test_each_rule_names_field_and_value(
    store: Store, tmp_path: Path, field: str, value: str, reason: str
) -> None:
    cells = GOOD[2].split(",")
    cells[COLUMNS.index(field)] = value
    ingest_customer_file(store, write(tmp_path, [",".join(cells)]))
    rows = store.query("SELECT field, reason FROM quarantine").fetchall()
    assert (field, rows[0][1]) == rows[0] and rows[0][1].startswith(reason)


def test_quarantine_command_lists_file_line_field(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    db = tmp_path / "s.duckdb"
    bad = GOOD[2].replace("quarterly", "weekly")
    with Store.open(db) as s:
        ingest_customer_file(s, write(tmp_path, [bad]))
    res = CliRunner().invoke(app, ["quarantine", "--db", str(db), "--json"])
    assert res.exit_code == 0, res.output
    assert '"source_line": 2' in res.output and '"field": "billing_cycle"' in res.output
    # --out: the same rows for machines (JSON here; the suffix picks the format)
    res = CliRunner().invoke(
        app, ["quarantine", "--db", str(db), "--out", str(tmp_path / "q.json")]
    )
    assert res.exit_code == 0, res.output
    (row,) = json.loads((tmp_path / "q.json").read_text())
    assert (row["source_line"], row["field"]) == (2, "billing_cycle")
    assert row["source_file"].endswith(".csv") and "weekly" in row["raw"]
    other = write(tmp_path, [bad.replace("A2", "A9")], "b.csv")  # new bytes, not a duplicate
    res = CliRunner().invoke(app, ["ingest", "customers", str(other), "--db", str(db)])
    assert res.exit_code == 3, res.output
    assert "quarantined" in res.output
