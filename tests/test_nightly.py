"""The nightly run: idempotent, crash-safe (SIGKILL at every failpoint), single writer, audited."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from settlement.audits import AUDITS, Audit
from settlement.config import load_config
from settlement.nightly import run_nightly
from settlement.store import Store
from tariffs.errors import ExitCode
from tests.nightly_fixtures import DAYS, START, build_inbox, meter_frame

END = START + dt.timedelta(days=DAYS - 1)
RANGE = ["--from", START.isoformat(), "--to", END.isoformat()]
OUTPUT_TABLES = {
    "wholesale_settlement": "SELECT * FROM wholesale_settlement ORDER BY account, interval_start",
    "settled_days": "SELECT settlement_date, run_id FROM settled_days ORDER BY 1",
    "meter_reads": "SELECT * EXCLUDE (source_file) FROM meter_reads ORDER BY ALL",
    "prices": "SELECT * EXCLUDE (source_file) FROM prices ORDER BY ALL",
}
OPTIONAL_TABLES = {
    "bills": "SELECT * FROM bills ORDER BY ALL",
    "bill_lines": "SELECT * FROM bill_lines ORDER BY ALL",
}


def cli(
    root: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `fairshare nightly` in a fresh process (so SIGKILL is real)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "nightly",
            *RANGE,
            "--config",
            str(root / "fairshare.toml"),
            "--db",
            str(root / "store.duckdb"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, **(env or {})},
    )


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


def test_run_settles_archives_and_publishes(tmp_path: Path) -> None:
    cfg = load_config(build_inbox(tmp_path))
    with Store.open(tmp_path / "store.duckdb") as store:
        result = run_nightly(store, cfg, START, END)
        assert result.exit_code == ExitCode.OK, result.message
        n = store.query("SELECT count(*) FROM wholesale_settlement").fetchall()[0][0]
    assert n == len(("A1", "A2", "A3")) * DAYS * 48
    assert not any((tmp_path / "inbox" / "meter").iterdir())
    assert (tmp_path / "archive" / "meter" / "NEM12_retailer_202401.csv").exists()
    snap = Path(result.snapshot or "")
    assert (snap / "manifest.json").exists() and (snap / "wholesale_settlement.parquet").exists()
    assert not os.access(snap / "wholesale_settlement.parquet", os.W_OK) or os.geteuid() == 0
    assert set(result.manifest["stages"]) >= {"ingest", "settle", "audit", "publish"}
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
    build_inbox(tmp_path)
    assert cli(tmp_path).returncode == 0
    assert tables(tmp_path / "store.duckdb") == reference


FAILPOINTS = [
    "ingest.before_commit",  # inside a file's ingestion transaction
    "ingest.before_commit:3",  # inside the third file's transaction
    "ingest.after_commit",  # committed, not yet archived
    "settle.in_transaction",  # mid-day settlement
    "settle.after_day:3",  # between days
    "audit.after_queries",
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
    good = (tmp_path / "inbox" / "meter" / "NEM12_retailer_202401.csv").read_text().splitlines()
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
    AUDITS.append(spike)
    try:
        with Store.open(tmp_path / "store.duckdb") as store:
            result = run_nightly(store, cfg, START, END)
            stored = store.query(
                "SELECT failing_rows FROM audit_results WHERE audit = ?", [spike.name]
            ).fetchall()
            status = store.query("SELECT status, exit_code FROM runs").fetchall()
    finally:
        AUDITS.remove(spike)
    assert result.exit_code == ExitCode.AUDIT_FAILED
    failed = [a for a in result.audits if not a.passed]
    assert [a.name for a in failed] == [spike.name]
    assert failed[0].sample and failed[0].sample[0]["account"] in ("A1", "A2", "A3")
    assert stored[0][0] == failed[0].failing_rows > 0
    assert status == [("failed", int(ExitCode.AUDIT_FAILED))]


def test_revised_meter_file_resettles_its_day(tmp_path: Path) -> None:
    from settlement.nem12_writer import write_nem12

    cfg = load_config(build_inbox(tmp_path))
    with Store.open(tmp_path / "store.duckdb") as store:
        run_nightly(store, cfg, START, END)
        before = store.query(
            "SELECT sum(import_kwh) FROM wholesale_settlement WHERE settlement_date = ?", [START]
        ).fetchall()[0][0]
        revised = meter_frame(days=1, bump=0.1).with_columns(
            update_datetime=dt.datetime(2024, 3, 1)
        )
        write_nem12(revised, tmp_path / "inbox" / "meter" / "NEM12_revised.csv")
        later = END + dt.timedelta(days=1)
        result = run_nightly(store, cfg, later, later)
        after = store.query(
            "SELECT sum(import_kwh) FROM wholesale_settlement WHERE settlement_date = ?", [START]
        ).fetchall()[0][0]
    assert START.isoformat() in result.manifest["stages"]["settle"]["resettled_days"]
    assert after == pytest.approx(before + 0.1 * 48 * 3)


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    build_inbox(tmp_path)
    proc = cli(tmp_path, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "inbox" / "meter" / "NEM12_retailer_202401.csv").exists()
    with Store.open(tmp_path / "store.duckdb", read_only=True) as s:
        assert s.query("SELECT count(*) FROM ingested_files").fetchall() == [(0,)]
    shutil.rmtree(tmp_path / "inbox")
