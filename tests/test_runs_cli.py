"""``fairshare runs list|show``: the nightly runs as the store recorded them (settlement/run_history.py).

A July run stopped by a failed bill audit, then run again (attempt 2, issued), then an August
run of one day: the list shows them newest first with their figures, filters by range and
status, writes them for machines; ``show`` gives every attempt's stages and the last attempt's
audits; an unknown run or status is a usage error.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from cli.main import app
from settlement.audits import BILL_AUDITS, Audit
from settlement.config import load_config
from settlement.nightly import run_nightly
from settlement.store import Store
from tariffs.errors import ExitCode
from tests.nightly_fixtures import START, added_audit, build_inbox

runner = CliRunner()
JULY_END = dt.date(2024, 7, 31)
AUG = dt.date(2024, 8, 1)
BIG = Audit(
    "no_bill_above_10_aud",
    "test audit: a bill (issued or to be issued) over $10",
    "SELECT b.bill_id FROM bills b WHERE {to_issue} AND b.total_inc_gst > 10",
    ("bill_issues",),
)


def _runs(db: Path, *args: str) -> list[dict[str, object]]:
    res = runner.invoke(app, ["runs", "list", "--db", str(db), "--json", *args])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_runs_list_and_show(tmp_path: Path) -> None:
    cfg = load_config(build_inbox(tmp_path))
    db = tmp_path / "store.duckdb"
    with Store.open(db) as store:
        with added_audit(BILL_AUDITS, BIG):
            failed = run_nightly(store, cfg, START, JULY_END)
        assert failed.exit_code == ExitCode.AUDIT_FAILED
        july = run_nightly(store, cfg, START, JULY_END)
        assert july.exit_code == ExitCode.OK and july.run_id == failed.run_id
        august = run_nightly(store, cfg, AUG, AUG)
    runs = _runs(db)
    assert [r["run_id"] for r in runs] == [august.run_id, july.run_id]
    first = runs[1]
    assert (first["status"], first["exit_code"], first["attempts"]) == ("succeeded", 0, 2)
    assert (first["date_from"], first["date_to"]) == ("2024-07-01", "2024-07-31")
    # the last attempt's figures: its rerun drafts and issues the three July bills; the files
    # were loaded by the first attempt, so the second loads none
    assert (first["bills_drafted"], first["bills_issued"], first["bills_held"]) == (3, 3, 0)
    assert first["rows_loaded"] == 0 and first["failed_audits"] is None
    assert first["audits"] >= 10 and first["snapshot"] == july.snapshot
    assert first["stage_seconds"] > 0
    assert runs[0]["bills_issued"] == 0 and runs[0]["status"] == "succeeded"
    # filters: a range that only July meets, a status no run has
    assert [r["run_id"] for r in _runs(db, "--to", "2024-07-31")] == [july.run_id]
    assert [r["run_id"] for r in _runs(db, "--from", "2024-08-01")] == [august.run_id]
    assert _runs(db, "--status", "failed") == []
    assert len(_runs(db, "--limit", "1")) == 1
    # for machines: the same rows as CSV
    res = runner.invoke(app, ["runs", "list", "--db", str(db), "--out", str(tmp_path / "r.csv")])
    assert res.exit_code == 0, res.output
    assert pl.read_csv(tmp_path / "r.csv")["run_id"].to_list() == [august.run_id, july.run_id]
    # show: both attempts' stages; the audits of the last one, the test audit not among them
    res = runner.invoke(app, ["runs", "show", july.run_id, "--db", str(db), "--json"])
    assert res.exit_code == 0, res.output
    shown = json.loads(res.stdout)
    stages = {(s["attempt"], s["stage"]): s["details"] for s in shown["stages"]}
    assert stages[(1, "audit")]["failed"] == [BIG.name]
    assert stages[(1, "issue")]["bills_issued"] == 0  # the failed audit stopped them
    assert stages[(2, "issue")]["bills_issued"] == 3 and (2, "publish") in stages
    assert {a["audit"] for a in shown["audits"]} == {a.name for a in july.audits}
    assert all(a["failing_rows"] == 0 for a in shown["audits"])
    assert shown["params"]["date_from"] == "2024-07-01"
    assert shown["manifest"]["stages"]["issue"]["bills_issued"] == 3
    res = runner.invoke(app, ["runs", "show", july.run_id, "--db", str(db)], env={"COLUMNS": "160"})
    assert res.exit_code == 0, res.output
    assert "audits (last attempt)" in res.output and f"snapshot: {july.snapshot}" in res.output
    # usage errors, exit 2
    res = runner.invoke(app, ["runs", "show", "no-such-run", "--db", str(db)])
    assert res.exit_code == 2 and "no run 'no-such-run'" in res.output
    res = runner.invoke(app, ["runs", "list", "--db", str(db), "--status", "done"])
    assert res.exit_code == 2 and "one of running, succeeded, failed, abandoned" in res.output
