"""The nightly run: idempotent, crash-safe (SIGKILL at every failpoint), single writer, audited."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
import pytest

from settlement.audits import AUDITS, BILL_AUDITS, Audit
from settlement.config import load_config
from settlement.nightly import days_between, run_nightly
from settlement.schema_wholesale_refs import REF_KEY
from settlement.store import Store
from tariffs.errors import ExitCode
from tests.nightly_fixtures import (
    DAYS,
    START,
    added_audit,
    build_inbox,
    meter_frame,
    nightly_cli,
)

END = START + dt.timedelta(days=DAYS - 1)
RANGE = ["--from", START.isoformat(), "--to", END.isoformat()]
OUTPUT_TABLES = {
    "wholesale_reads": "SELECT * FROM wholesale_reads ORDER BY account, suffix, interval_start",
    "settled_days": "SELECT settlement_date, run_id FROM settled_days ORDER BY 1",
    "meter_reads": "SELECT * EXCLUDE (source_file) FROM meter_reads ORDER BY ALL",
    "prices": "SELECT * EXCLUDE (source_file) FROM prices ORDER BY ALL",
}
OPTIONAL_TABLES = {
    "bills": "SELECT * EXCLUDE (created_at) FROM bills ORDER BY ALL",
    "bill_lines": "SELECT * FROM bill_lines ORDER BY ALL",
    "bill_issues": "SELECT bill_id, nightly_run_id, content_sha256 FROM bill_issues ORDER BY ALL",
    "accrual_days": "SELECT * FROM accrual_days ORDER BY ALL",
    "accrual_lines": "SELECT * FROM accrual_lines ORDER BY ALL",
}


def own_arrays(store: Store) -> None:
    """Give every settled row its own copy of the array it refers to (schema v14 rows refer to
    their ``meter_days`` row), so that a test can tamper with a settled read alone."""
    store.con.execute(
        f"UPDATE wholesale_day_rows w SET kwh = m.kwh FROM meter_days m WHERE w.kwh IS NULL AND {REF_KEY}"
    )


def cli(
    root: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `fairshare nightly` over the fixture's range in a fresh process (so SIGKILL is real)."""
    return nightly_cli(root, *RANGE, *args, env=env)


def tables(db: Path) -> dict[str, list[tuple[object, ...]]]:
    with Store.open(db, read_only=True) as s:
        have = {
            r[0]
            for r in s.con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        }
        out = {name: s.con.execute(sql).fetchall() for name, sql in OUTPUT_TABLES.items()}
        for name, sql in OPTIONAL_TABLES.items():
            if name in have:
                out[name] = s.con.execute(sql).fetchall()
        return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[object, ...]]]:
    """Output tables of one uninterrupted run."""
    root = tmp_path_factory.mktemp("ref")
    build_inbox(root)
    proc = cli(root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return tables(root / "store.duckdb")


def test_run_settles_archives_and_publishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run settles every read, archives its inputs and publishes a read-only snapshot whose
    ``views.sql`` reads the settlement back exactly as the store's ``wholesale_reads``,
    ``wholesale_settlement`` and ``daily_charges``."""
    cfg = load_config(build_inbox(tmp_path))
    with Store.open(tmp_path / "store.duckdb") as store:
        result = run_nightly(store, cfg, START, END)
        values = store.query("SELECT count(*) FROM wholesale_values").fetchall()[0][0]
        assert result.exit_code == ExitCode.OK, result.message
        n = store.query("SELECT count(*) FROM wholesale_settlement").fetchall()[0][0]
        stored = store.query("SELECT * FROM wholesale_reads ORDER BY ALL").fetchall()
        stored_settlement = store.query(
            "SELECT * FROM wholesale_settlement ORDER BY ALL"
        ).fetchall()
        stored_charges = store.query("SELECT * FROM daily_charges ORDER BY ALL").fetchall()
        cost = store.query(
            "SELECT sum(amount_aud) FILTER (suffix[1] = 'E') FROM wholesale_reads"
        ).fetchall()[0][0]
    assert n == len(("A1", "A2", "A3")) * DAYS * 48
    # the manifest's figures, from the day arrays, are the per-read view's
    assert result.manifest["row_counts"]["wholesale_reads"] == values
    assert result.manifest["wholesale_cost_aud"] == round(cost, 2) and cost > 0
    assert not any((tmp_path / "inbox" / "meter").iterdir())
    assert (tmp_path / "archive" / "meter" / "NEM12_retailer_202407.csv").exists()
    snap = Path(result.snapshot or "")
    # one file per day, the day arrays in key order (terms, channel, interval length)
    days = sorted((snap / "wholesale_days").glob("*.parquet"))
    assert [f.stem for f in days] == [d.isoformat() for d in days_between(START, END)]
    assert (snap / "manifest.json").exists()
    assert all(not os.access(f, os.W_OK) for f in days) or os.geteuid() == 0
    with duckdb.connect() as con:
        keys = [
            con.execute(
                "SELECT settlement_date, terms_id, channel_id, interval_minutes, list_count(kwh)"
                " FROM read_parquet(?)",
                [str(f)],
            ).fetchall()
            for f in days
        ]
    flat = [row for k in keys for row in k]
    assert flat == sorted(flat) and sum(row[4] for row in flat) == values
    monkeypatch.chdir(snap)
    with duckdb.connect() as con:
        con.execute((snap / "views.sql").read_text())
        published = con.execute("SELECT * FROM wholesale_reads ORDER BY ALL").fetchall()
        settlement = con.execute("SELECT * FROM wholesale_settlement ORDER BY ALL").fetchall()
        charges = con.execute("SELECT * FROM daily_charges ORDER BY ALL").fetchall()
    assert len(published) == len(stored) > 0 and published == stored
    assert len(settlement) == len(stored_settlement) > 0 and settlement == stored_settlement
    assert len(charges) == len(stored_charges) > 0 and charges == stored_charges
    assert set(result.manifest["stages"]) >= {"ingest", "settle", "audit", "publish"}
    # the audit stage logs each audit's time, the publish stage each snapshot file's time and size
    timed = result.manifest["stages"]["audit"]["audit_seconds"]
    assert set(timed) == {a.name for a in result.audits} and len(timed) >= 10
    assert all(t == a.seconds >= 0 for a in result.audits for t in [timed[a.name]])
    files = result.manifest["stages"]["publish"]["files"]
    written = {str(p.relative_to(snap))[: -len(".parquet")] for p in snap.rglob("*.parquet")}
    assert set(files) == written
    for name, f in files.items():
        assert f["mb"] == round((snap / f"{name}.parquet").stat().st_size / 1e6, 2)
        assert f["seconds"] >= 0
    assert {i["kind"] for i in result.manifest["inputs"]} == {"customers", "prices", "meter"}


def test_second_run_changes_nothing_and_says_so(
    tmp_path: Path, reference: dict[str, list[tuple[object, ...]]]
) -> None:
    build_inbox(tmp_path)
    assert cli(tmp_path).returncode == 0
    again = cli(tmp_path)
    assert again.returncode == 0
    assert "nothing to do" in again.stdout
    assert tables(tmp_path / "store.duckdb") == reference


def test_output_is_deterministic_across_stores(
    tmp_path: Path, reference: dict[str, list[tuple[object, ...]]]
) -> None:
    """Same inputs in two fresh stores: the same tables, and a byte-identical snapshot (every
    Parquet file and views.sql; the manifest differs only by its timings)."""
    snapshots = []
    for root in (tmp_path / "a", tmp_path / "b"):
        build_inbox(root)
        assert cli(root).returncode == 0
        assert tables(root / "store.duckdb") == reference
        (run,) = [p for p in (root / "runs").iterdir() if not p.name.startswith(".")]
        snapshots.append(
            {
                str(p.relative_to(run)): p.read_bytes()
                for p in sorted(run.rglob("*"))
                if p.is_file() and p.name != "manifest.json"
            }
        )
    day_files = [f"wholesale_days/{d}.parquet" for d in days_between(START, END)]
    assert set(day_files) <= set(snapshots[0]) and "views.sql" in snapshots[0]
    assert snapshots[0] == snapshots[1]


FAILPOINTS = [
    "ingest.before_commit",  # inside a file's ingestion transaction
    "ingest.before_commit:3",  # inside the third file's transaction
    "ingest.after_commit",  # committed, not yet archived
    "settle.in_transaction",  # mid-day settlement
    "settle.after_accruals:2",  # the second day's accruals written, its transaction open
    "settle.after_day:3",  # between days
    "bill.after_billing_run",  # bills written as drafts, not issued
    "bill.before_issue_commit",  # inside the issue transaction
    "audit.after_queries",
    "manifest.computed",  # the manifest made (its stage's row not yet written)
    "publish.before_rename",  # snapshot staged, not renamed
    "run.before_finish",
]


@pytest.mark.parametrize("point", FAILPOINTS)
def test_sigkill_anywhere_then_rerun_equals_uninterrupted(
    tmp_path: Path, point: str, reference: dict[str, list[tuple[object, ...]]]
) -> None:
    build_inbox(tmp_path)
    killed = cli(tmp_path, env={"FAIRSHARE_FAILPOINT": point})
    assert killed.returncode == -signal.SIGKILL, (
        f"{point} never reached: {killed.stdout}{killed.stderr}"
    )
    rerun = cli(tmp_path)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert tables(tmp_path / "store.duckdb") == reference
    assert not list((tmp_path / "runs").glob(".staging-*"))
    assert not any((tmp_path / "inbox" / "meter").iterdir())


def _with_a_held_bill(root: Path) -> None:
    """The tiny retailer with A3's site moved to VIC1: its NSW1 product holds A3's bill."""
    build_inbox(root)
    customers = root / "inbox" / "customers" / "customers.csv"
    lines = customers.read_text().splitlines()
    lines[3] = lines[3].replace(",NSW1,", ",VIC1,")
    customers.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("point", ["publish.before_rename", "run.before_finish"])
def test_killed_after_issue_with_a_held_bill_the_rerun_keeps_the_issued_bills(
    tmp_path: Path, point: str
) -> None:
    """A run killed after its issue step reruns the same billing runs for the cycle still due
    (the held one): the bills it issued stay issued, unchanged and recorded once (the rerun
    deleted them with its earlier attempt's drafts, so every later run failed
    issued_bills_unchanged and the cycles would have been billed again)."""
    ref, killed_root = tmp_path / "ref", tmp_path / "killed"
    for root in (ref, killed_root):
        _with_a_held_bill(root)
    assert cli(ref).returncode == ExitCode.HELD
    killed = cli(killed_root, env={"FAIRSHARE_FAILPOINT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    rerun = cli(killed_root)
    assert rerun.returncode == ExitCode.HELD, rerun.stdout + rerun.stderr
    got = tables(killed_root / "store.duckdb")
    assert got == tables(ref / "store.duckdb")
    assert [b[0].split("/")[0] for b in got["bill_issues"]] == ["A1", "A2"]
    again = cli(killed_root)
    assert again.returncode == ExitCode.HELD and "nothing to do" in again.stdout


# Manifest fields of an attempt that may differ between a rerun after a crash and an
# uninterrupted run: each stage's timings and memory (the audits' own times too), and the
# attempt's own ingestion (a rerun finds the files already ingested: ``ingest`` and
# ``stages.ingest`` count nothing; the inputs of the run are ``inputs``, the same). Everything
# else must agree.
ATTEMPT_FIELDS = ("seconds", "cpu_seconds", "peak_rss_mb", "audit_seconds")


def _manifest(root: Path) -> dict[str, object]:
    (path,) = (root / "runs").glob("*/manifest.json")
    m = json.loads(path.read_text().replace(str(root), "<root>"))  # two roots, one layout
    m.pop("ingest")
    stages = m.pop("stages")
    stages.pop("ingest")
    m["stages"] = {
        name: {k: v for k, v in stage.items() if k not in ATTEMPT_FIELDS}
        for name, stage in stages.items()
    }
    return m


@pytest.mark.parametrize("point", ["bill.before_issue_commit", "publish.before_rename"])
def test_killed_after_issue_the_rerun_manifest_reports_what_the_run_billed(
    tmp_path: Path, point: str
) -> None:
    """Review finding: killed after the issue step, the rerun found nothing due and its
    manifest reported 0 drafts, 0 bills issued, no billing runs and no product versions (the
    uninterrupted run: 3, 3, one billing run, three products). The counts, billing runs and
    product versions are read from what the run stored, so the manifests agree (but for the
    fields of ``ATTEMPT_FIELDS`` and the attempt's ingestion)."""
    ref, killed_root = tmp_path / "ref", tmp_path / "killed"
    for root in (ref, killed_root):
        build_inbox(root)
    assert cli(ref).returncode == 0
    killed = cli(killed_root, env={"FAIRSHARE_FAILPOINT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert cli(killed_root).returncode == 0
    want, got = _manifest(ref), _manifest(killed_root)
    stages = want["stages"]
    assert isinstance(stages, dict)
    assert stages["bill"]["drafts"] == 3 and stages["issue"]["bills_issued"] == 3
    assert len(stages["bill"]["billing_runs"]) == 1
    assert [v["product"] for v in want["product_versions"]] == [  # type: ignore[attr-defined]
        "dyn-passthrough",
        "sh-flat",
        "sh-tou",
    ]
    assert got == want


def test_concurrent_second_run_is_refused_with_exit_5(tmp_path: Path) -> None:
    build_inbox(tmp_path)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys,time; from settlement.store import Store; "
            f"s = Store.open({str(tmp_path / 'store.duckdb')!r}); print('ready', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        proc = cli(tmp_path)
        assert proc.returncode == ExitCode.LOCK_HELD
        assert "in use by another fairshare process" in proc.stderr
    finally:
        holder.kill()
        holder.wait()


def test_quarantined_input_still_settles_good_data(tmp_path: Path) -> None:
    build_inbox(tmp_path)
    bad = tmp_path / "inbox" / "meter" / "NEM12_broken.csv"
    good = (tmp_path / "inbox" / "meter" / "NEM12_retailer_202407.csv").read_text().splitlines()
    bad.write_text("\n".join([good[0], good[1], good[2].replace(",0.", ",x.", 1), "900"]) + "\n")
    proc = cli(tmp_path)
    assert proc.returncode == ExitCode.QUARANTINED, proc.stdout + proc.stderr
    with Store.open(tmp_path / "store.duckdb", read_only=True) as s:
        q = s.query("SELECT source_file, source_line FROM quarantine").fetchall()
        n = s.query("SELECT count(*) FROM wholesale_settlement").fetchall()[0][0]
    assert q and q[0][0].endswith("NEM12_broken.csv") and q[0][1] == 3
    assert n == 3 * DAYS * 48


def test_failed_audit_fails_the_run_and_names_rows(tmp_path: Path) -> None:
    cfg = load_config(build_inbox(tmp_path))
    spike = Audit(
        "no_interval_above_1000_aud",
        "test audit: an interval costing over $1",
        "SELECT account, interval_start, cost_aud FROM wholesale_settlement "
        "WHERE settlement_date BETWEEN $date_from AND $date_to AND cost_aud > 1",
        ("wholesale_settlement",),
    )
    with added_audit(AUDITS, spike), Store.open(tmp_path / "store.duckdb") as store:
        result = run_nightly(store, cfg, START, END)
        stored = store.query(
            "SELECT failing_rows FROM audit_results WHERE audit = ?", [spike.name]
        ).fetchall()
        status = store.query("SELECT status, exit_code FROM runs").fetchall()
    assert result.exit_code == ExitCode.AUDIT_FAILED
    failed = [a for a in result.audits if not a.passed]
    assert [a.name for a in failed] == [spike.name]
    assert failed[0].sample and failed[0].sample[0]["account"] in ("A1", "A2", "A3")
    assert stored[0][0] == failed[0].failing_rows > 0
    assert status == [("failed", int(ExitCode.AUDIT_FAILED))]


def test_a_failed_bill_audit_issues_nothing_and_the_rerun_issues_as_uninterrupted(
    tmp_path: Path, reference: dict[str, list[tuple[object, ...]]]
) -> None:
    """The audits run on the drafts before anything is issued: a bill audit that fails leaves
    the run's bills as drafts (no bill_issues row, no adjustment applied) and names the draft's
    rows; once the audit passes, the rerun of the same inputs issues exactly the bills of an
    uninterrupted run."""
    cfg = load_config(build_inbox(tmp_path))
    big = Audit(
        "no_bill_above_10_aud",
        "test audit: a bill (issued or to be issued) over $10",
        "SELECT b.bill_id, b.status, b.total_inc_gst FROM bills b "
        "WHERE {to_issue} AND b.total_inc_gst > 10",
        ("bill_issues",),
    )
    with added_audit(BILL_AUDITS, big), Store.open(tmp_path / "store.duckdb") as store:
        failed = run_nightly(store, cfg, START, END)
        statuses = store.query("SELECT DISTINCT status FROM bills ORDER BY 1").fetchall()
        issued = store.query("SELECT count(*) FROM bill_issues").fetchall()[0][0]
    assert failed.exit_code == ExitCode.AUDIT_FAILED
    assert failed.message.endswith("3 bill(s) drafted and not issued")
    (audit,) = [a for a in failed.audits if not a.passed]
    assert audit.name == big.name and audit.failing_rows == 3
    assert {r["status"] for r in audit.sample} == {"draft"}
    assert statuses == [("draft",)] and issued == 0
    assert failed.manifest["stages"]["issue"]["bills_issued"] == 0
    assert failed.manifest["stages"]["issue"]["not_issued"] == 3
    # the snapshot shows the auditor the drafts the audit stopped
    with duckdb.connect() as con:
        stopped = con.execute(
            "SELECT DISTINCT status FROM read_parquet(?)",
            [str(Path(failed.snapshot or "") / "bills.parquet")],
        ).fetchall()
    assert stopped == [("draft",)]
    with Store.open(tmp_path / "store.duckdb") as store:
        rerun = run_nightly(store, cfg, START, END)
    assert rerun.exit_code == ExitCode.OK, rerun.message
    assert rerun.manifest["stages"]["issue"]["bills_issued"] == 3
    assert tables(tmp_path / "store.duckdb") == reference


def test_revised_meter_file_resettles_its_day(tmp_path: Path) -> None:
    from settlement.nem12_writer import write_nem12

    cfg = load_config(build_inbox(tmp_path))
    with Store.open(tmp_path / "store.duckdb") as store:
        run_nightly(store, cfg, START, END)
        before = store.query(
            "SELECT sum(import_kwh) FROM wholesale_settlement WHERE settlement_date = ?", [START]
        ).fetchall()[0][0]
        revised = meter_frame(days=1, bump=0.1).with_columns(
            update_datetime=dt.datetime(2024, 9, 1)
        )
        write_nem12(revised, tmp_path / "inbox" / "meter" / "NEM12_revised.csv")
        later = END + dt.timedelta(days=1)
        # a day audit that names the days it was run over (each range is one failing row)
        probe = Audit(
            "probe_ranges", "test: the ranges", "SELECT $date_from AS d1, $date_to AS d2", ()
        )
        with added_audit(AUDITS, probe):
            result = run_nightly(store, cfg, later, later)
        after = store.query(
            "SELECT sum(import_kwh) FROM wholesale_settlement WHERE settlement_date = ?", [START]
        ).fetchall()[0][0]
        energy = store.query(
            "SELECT failing_rows FROM audit_results WHERE audit = 'wholesale_energy_conserved' "
            "AND run_id = ?",
            [result.run_id],
        ).fetchall()
    assert START.isoformat() in result.manifest["stages"]["settle"]["resettled_days"]
    assert after == pytest.approx(before + 0.1 * 48 * 3)
    # the run's day audits covered its own day and the revised day it re-settled
    (ranges,) = [a for a in result.audits if a.name == "probe_ranges"]
    assert [(r["d1"], r["d2"]) for r in ranges.sample] == [
        (later.isoformat(), later.isoformat()),
        (START.isoformat(), START.isoformat()),
    ]
    assert energy == [(0,)]


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    build_inbox(tmp_path)
    proc = cli(tmp_path, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "inbox" / "meter" / "NEM12_retailer_202407.csv").exists()
    assert not (tmp_path / "store.duckdb").exists()  # not even created
    shutil.rmtree(tmp_path / "inbox")


def _august_inbox(root: Path, *, revise: bool) -> None:
    from settlement.nem12_writer import write_nem12
    from tests.nightly_fixtures import price_csv

    aug = dt.date(2024, 8, 1)
    write_nem12(
        meter_frame(days=31, start=aug), root / "inbox" / "meter" / "NEM12_retailer_202408.csv"
    )
    price_csv(root / "inbox" / "prices" / "PRICE_AND_DEMAND_202408_NSW1.csv", days=31, start=aug)
    if revise:  # 3 July re-read: +0.1 kWh in every import interval, later UpdateDateTime
        revised = meter_frame(days=1, start=dt.date(2024, 7, 3), bump=0.1).filter(
            pl.col("suffix") == "E1"
        )
        write_nem12(
            revised.with_columns(update_datetime=dt.datetime(2024, 8, 20)),
            root / "inbox" / "meter" / "NEM12_revised_20240703.csv",
        )


def _two_months(
    tmp_path: Path, back_billing_months: int = 9
) -> tuple[Store, list[tuple[object, ...]]]:
    cfg = load_config(build_inbox(tmp_path)).model_copy(
        update={"back_billing_months": back_billing_months}
    )
    store = Store.open(tmp_path / "store.duckdb")
    assert run_nightly(store, cfg, START, END).exit_code == ExitCode.OK
    july = store.query("SELECT * FROM bills WHERE status = 'issued' ORDER BY bill_id").fetchall()
    july_lines = store.query("SELECT * FROM bill_lines ORDER BY ALL").fetchall()
    _august_inbox(tmp_path, revise=True)
    result = run_nightly(store, cfg, dt.date(2024, 8, 1), dt.date(2024, 8, 31))
    assert result.exit_code == ExitCode.OK, (result.message, result.manifest.get("stages"))
    # the July bills are untouched: same rows, same lines
    assert (
        store.query(
            "SELECT * FROM bills WHERE bill_id IN (SELECT original_bill_id FROM bill_adjustments) ORDER BY bill_id"
        ).fetchall()
        == july
    )
    assert store.query(
        "SELECT * FROM bill_lines WHERE bill_id IN (SELECT original_bill_id FROM bill_adjustments) ORDER BY ALL"
    ).fetchall() == [r for r in july_lines if r[0] in {b[0] for b in july}]
    return store, july


def test_revised_meter_file_after_issue_becomes_linked_adjustment_on_next_bill(
    tmp_path: Path,
) -> None:
    store, july = _two_months(tmp_path)
    try:
        adj = store.query(
            "SELECT a.original_bill_id, a.applied_to_bill_id, a.status, a.credit_ex_gst, a.rebill_ex_gst,"
            " b.total_ex_gst FROM bill_adjustments a JOIN bills b ON b.bill_id = a.original_bill_id ORDER BY 1"
        ).fetchall()
        assert {a[0] for a in adj} == {b[0] for b in july}  # every July bill was revised
        for original, applied_to, status, credit, rebill, original_total in adj:
            assert status == "applied" and applied_to.startswith(original.split("/")[0] + "/")
            assert "2024-08-01" in applied_to  # the next bill, August
            assert credit == -original_total
            assert rebill > original_total  # more energy re-read, rates positive: undercharge
            lines = store.query(
                "SELECT component, amount_ex_gst, detail FROM bill_lines WHERE bill_id = ? AND component LIKE 'Adjustment%' ORDER BY line_no",
                [applied_to],
            ).fetchall()
            assert [(c, a) for c, a, _ in lines] == [
                ("Adjustment: credit", credit),
                ("Adjustment: rebill", rebill),
            ]
            assert all(original in d for _, _, d in lines)
        # the flat product charges 0.1 kWh x 48 intervals more energy on 3 July
        flat = next(a for a in adj if "/sh-flat/" in a[0])
        rate = store.query(
            "SELECT rate FROM bill_lines WHERE bill_id = ? AND unit = 'kWh' AND quantity > 0 LIMIT 1",
            [flat[0]],
        ).fetchall()[0][0]
        assert float(flat[4] - flat[5]) == pytest.approx(4.8 * rate, abs=0.011)
        audits = store.query(
            "SELECT audit, failing_rows FROM audit_results WHERE failing_rows > 0"
        ).fetchall()
        assert audits == []
    finally:
        store.close()


def test_back_billing_limit_writes_off_old_undercharge(tmp_path: Path) -> None:
    store, july = _two_months(tmp_path, back_billing_months=0)
    try:
        rows = store.query(
            "SELECT a.status, a.credit_ex_gst + a.rebill_ex_gst AS net, l.amount_ex_gst FROM bill_adjustments a"
            " JOIN bill_lines l ON l.bill_id = a.applied_to_bill_id AND l.component = 'Adjustment: back-billing limit'"
            " AND l.detail LIKE '%' || a.original_bill_id || '%'"
        ).fetchall()
        assert len(rows) == len(july)
        for status, net, written_off in rows:
            assert status == "applied_written_off" and net > 0 and written_off == -net
    finally:
        store.close()


def test_energy_audits_catch_a_settled_or_billed_kwh_that_differs_from_the_meter(
    tmp_path: Path,
) -> None:
    """The two energy audits (rewritten over the numeric meter tables) report a tampered settled
    read and a tampered issued bill line, naming the account and the bill."""
    from settlement.audits import run_audits
    from settlement.closing import stage_channels

    cfg = load_config(build_inbox(tmp_path))
    store = Store.open(tmp_path / "store.duckdb")
    try:
        assert run_nightly(store, cfg, START, END).exit_code == ExitCode.OK
        clean = {a.name: a.failing_rows for a in run_audits(store, START, END)}
        stage_channels(store, cfg.products)
        clean |= {a.name: a.failing_rows for a in run_audits(store, START, END)}
        assert clean["wholesale_energy_conserved"] == clean["billed_energy_equals_metered"] == 0
        own_arrays(store)
        store.con.execute(
            # the first read (slot 1) of A2's E1 array on the first settled day
            "UPDATE wholesale_day_rows SET kwh = list_concat([kwh[1] + 0.5], kwh[2:])"
            " WHERE channel_id = (SELECT channel_id FROM customers JOIN meter_channels"
            " USING (nmi) WHERE account = 'A2' AND suffix = 'E1')"
            " AND settlement_date = (SELECT min(settlement_date) FROM wholesale_day_rows)"
        )
        bill = store.query(
            "SELECT b.bill_id FROM bills b JOIN bill_lines l USING (bill_id) WHERE b.status ="
            " 'issued' AND l.unit = 'kWh' AND l.quantity > 0 ORDER BY 1 LIMIT 1"
        ).fetchall()[0][0]
        store.con.execute(
            "UPDATE bill_lines SET quantity = quantity + 1 WHERE bill_id = ? AND line_no ="
            " (SELECT min(line_no) FROM bill_lines WHERE bill_id = ? AND unit = 'kWh'"
            " AND quantity > 0)",
            [bill, bill],
        )
        found = {a.name: a for a in run_audits(store, START, END)}
    finally:
        store.close()
    energy = found["wholesale_energy_conserved"]
    assert energy.failing_rows == 1 and energy.sample[0]["account"] == "A2"
    assert energy.sample[0]["settled_kwh"] == pytest.approx(energy.sample[0]["metered_kwh"] + 0.5)
    billed = found["billed_energy_equals_metered"]
    assert billed.failing_rows == 1 and billed.sample[0]["bill_id"] == bill


def test_an_array_changed_after_ingestion_is_caught_against_its_stored_sum(
    tmp_path: Path,
) -> None:
    """Since schema v16 the metered side of the energy audits is the sum each day row got at
    ingestion (``kwh_sum``), and the settled side reads the arrays: a ``meter_days`` array
    changed afterwards (a bug, a hand edit) no longer agrees with itself on both sides, so
    ``wholesale_energy_conserved`` names it. Before, the settlement referred to the same array
    the audit summed as metered, and the change went unseen."""
    from settlement.audits import run_audits

    cfg = load_config(build_inbox(tmp_path))
    store = Store.open(tmp_path / "store.duckdb")
    try:
        assert run_nightly(store, cfg, START, END).exit_code == ExitCode.OK
        clean = {a.name: a.failing_rows for a in run_audits(store, START, END)}
        assert clean["wholesale_energy_conserved"] == 0
        store.con.execute(
            "UPDATE meter_days SET kwh = list_concat([kwh[1] + 0.25], kwh[2:])"
            " WHERE is_current AND market_day = ? AND channel_id = (SELECT channel_id"
            " FROM customers JOIN meter_channels USING (nmi) WHERE account = 'A3'"
            " AND suffix = 'E1')",
            [START],
        )
        found = {a.name: a for a in run_audits(store, START, END)}
    finally:
        store.close()
    energy = found["wholesale_energy_conserved"]
    assert energy.failing_rows == 1 and energy.sample[0]["account"] == "A3"
    assert energy.sample[0]["day"] == START.isoformat()  # samples are JSON-safe
    assert energy.sample[0]["settled_kwh"] == pytest.approx(energy.sample[0]["metered_kwh"] + 0.25)


def test_issued_bill_hash_audit_covers_the_range_a_rotating_slice_and_all_on_demand(
    tmp_path: Path,
) -> None:
    """``issued_bills_unchanged`` hashes the issued bills of the run's range and one slice in
    ``ROTATION_NIGHTS`` of the others, so a night's cost does not grow with the history: an
    edited issued bill outside the range is found on exactly one of any 28 consecutive nights,
    a deleted one on every night; ``fairshare audit --all-issued`` finds both at once (exit
    4, the bills named in its JSON)."""
    from typer.testing import CliRunner

    from cli.main import app
    from settlement.audits import ROTATION_NIGHTS, run_audits

    cfg = load_config(build_inbox(tmp_path))
    db = tmp_path / "store.duckdb"
    store = Store.open(db)
    try:
        assert run_nightly(store, cfg, START, END).exit_code == ExitCode.OK
        ids = [r[0] for r in store.query("SELECT bill_id FROM bill_issues ORDER BY 1").fetchall()]
        edited, deleted = ids[0], ids[1]
        store.con.execute(
            "UPDATE bill_lines SET detail = detail || ' (edited)' WHERE bill_id = ?"
            " AND line_no = (SELECT min(line_no) FROM bill_lines WHERE bill_id = ?)",
            [edited, edited],
        )
        store.con.execute("DELETE FROM bill_lines WHERE bill_id = ?", [deleted])
        store.con.execute("DELETE FROM bills WHERE bill_id = ?", [deleted])

        def found(d1: dt.date, d2: dt.date, **kw: bool) -> list[str]:
            audits = {a.name: a for a in run_audits(store, d1, d2, **kw)}
            audit = audits["issued_bills_unchanged"]
            assert audit.failing_rows == len(audit.sample)
            return sorted(str(r["bill_id"]) for r in audit.sample)

        assert found(START, END) == sorted([edited, deleted])
        later = END + dt.timedelta(days=400)
        nights = [found(later + dt.timedelta(days=k), later + dt.timedelta(days=k))
                  for k in range(ROTATION_NIGHTS)]  # fmt: skip
        assert all(deleted in night for night in nights)
        assert sum(edited in night for night in nights) == 1
        assert found(later, later, all_issued=True) == sorted([edited, deleted])
    finally:
        store.close()
    day = later.isoformat()
    res = CliRunner().invoke(
        app, ["audit", "--from", day, "--to", day, "--all-issued", "--json", "--db", str(db)]
    )
    assert res.exit_code == int(ExitCode.AUDIT_FAILED), res.output
    report = {a["name"]: a for a in json.loads(res.stdout)}
    hashed = report["issued_bills_unchanged"]
    assert not hashed["passed"] and hashed["failing_rows"] == 2
    assert sorted(r["bill_id"] for r in hashed["sample"]) == sorted([edited, deleted])
    assert all(a["passed"] for name, a in report.items() if name != "issued_bills_unchanged")


def test_settlement_audits_name_repeated_and_nan_reads(tmp_path: Path) -> None:
    """``wholesale_no_duplicate_interval``: a settled day array holds one read per slot, so a
    repeat is a second row of the channel's day (here a copy of its first read on the run's last
    day), named with its count; the same slot on another day is not a repeat. (Until schema v11
    a read half a minute off the grid could be stored and was checked not to count as a repeat;
    an array has no place for it.) ``wholesale_no_nan`` names a NaN read, every read of a NaN
    loss factor once (a NaN read among them too) and a NaN price."""
    from settlement.audits import run_audits

    cfg = load_config(build_inbox(tmp_path))
    store = Store.open(tmp_path / "store.duckdb")
    try:
        assert run_nightly(store, cfg, START, END).exit_code == ExitCode.OK
        audit = "wholesale_no_duplicate_interval"
        assert {a.name: a.failing_rows for a in run_audits(store, START, END)}[audit] == 0
        channel = store.query(
            "SELECT channel_id FROM customers JOIN meter_channels USING (nmi) "
            "WHERE account = 'A2' AND suffix = 'E1'"
        ).fetchall()[0][0]
        own_arrays(store)
        store.con.execute(
            "INSERT INTO wholesale_day_rows SELECT settlement_date, terms_id, channel_id,"
            " interval_minutes, list_concat([kwh[1]], list_transform(kwh[2:], x -> NULL::DOUBLE)),"
            " flag_id, NULL, 1, NULL, NULL FROM wholesale_day_rows"
            " WHERE channel_id = ? AND settlement_date = ?",
            [channel, END],
        )
        found = {a.name: a for a in run_audits(store, START, END)}[audit]
        first = store.query(
            "SELECT min(interval_start) FROM wholesale_values WHERE channel_id = ? "
            "AND settlement_date = ?",
            [channel, END],
        ).fetchall()[0][0]
        # NaN: one read of A2, the loss factor of A3 (one of its reads NaN as well), a price
        store.con.execute(
            "UPDATE wholesale_day_rows SET kwh = list_concat(['NaN'::DOUBLE], kwh[2:]) "
            "WHERE channel_id = ? AND settlement_date = ?",
            [channel, END],
        )
        store.con.execute("UPDATE wholesale_terms SET dlf = 'NaN'::DOUBLE WHERE account = 'A3'")
        a3 = "(SELECT terms_id FROM wholesale_terms WHERE account = 'A3')"
        store.con.execute(
            f"UPDATE wholesale_day_rows SET kwh = list_concat(['Infinity'::DOUBLE], kwh[2:]) "
            f"WHERE terms_id IN {a3} AND settlement_date = (SELECT min(settlement_date) "
            f"FROM wholesale_day_rows WHERE terms_id IN {a3})"
        )
        a3_reads = store.query(
            f"SELECT count(*) FROM wholesale_values WHERE terms_id IN {a3} "
            "AND settlement_date BETWEEN ? AND ?",
            [START, END],
        ).fetchall()[0][0]
        store.con.execute(
            "UPDATE wholesale_prices SET price_per_mwh = 'NaN'::DOUBLE WHERE interval_start = "
            "(SELECT min(interval_start) FROM wholesale_prices)"
        )
        nan = {a.name: a for a in run_audits(store, START, END, sample_rows=10**6)}[
            "wholesale_no_nan"
        ]
    finally:
        store.close()
    accounts = [r["account"] for r in nan.sample]
    # the repeated copy of A2's first read on END is NaN too (both rows match the update)
    assert accounts.count("A2") == 2 and accounts.count("A3") == a3_reads > 0
    # as strict JSON: the non-finite numbers are strings
    assert [r["price_per_mwh"] for r in nan.sample if r["channel_id"] is None] == ["NaN"]
    assert [r["kwh"] for r in nan.sample if r["account"] == "A2"] == ["NaN", "NaN"]
    assert [r["kwh"] for r in nan.sample if r["kwh"] == "Infinity"] == ["Infinity"]
    assert json.loads(json.dumps(nan.sample, allow_nan=False)) == nan.sample
    assert nan.failing_rows == 2 + a3_reads + 1
    assert found.failing_rows == 1
    assert found.sample[0]["channel_or_region"] == str(channel)
    assert found.sample[0]["n"] == 2
    assert dt.datetime.fromisoformat(found.sample[0]["interval_start"]) == first
