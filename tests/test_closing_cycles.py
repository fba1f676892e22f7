"""The month-end close picks up every cycle it should, once: a cycle cut by a product switch
with one segment held, a cycle of a customer row that arrived late, an adjustment of an account
that has moved out (settlement/closing.py, steps 1 and 4)."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from cli.main import app
from settlement.audits import BILL_AUDITS, Audit
from settlement.billing_explain import explain_bill
from settlement.config import NightlyConfig, load_config
from settlement.customers import COLUMNS
from settlement.nem12_writer import write_nem12
from settlement.nightly import run_nightly
from settlement.store import Store
from tariffs.errors import ExitCode
from tests.nightly_fixtures import (
    NMIS,
    added_audit,
    build_inbox,
    meter_frame,
    nightly_cli,
    price_csv,
)

JUL, AUG, SEP = dt.date(2024, 7, 1), dt.date(2024, 8, 1), dt.date(2024, 9, 1)
WIDE = {"COLUMNS": "200"}  # the CLI's report lines unwrapped


def _customers(root: Path, rows: list[str]) -> None:
    (root / "inbox" / "customers" / "customers.csv").write_text(
        ",".join(COLUMNS) + "\n" + "\n".join(rows) + "\n"
    )


def _a1(move_out: str, product: str, start: str, end: str) -> str:
    return (
        f"A1,{NMIS['A1']},NSW1,Australia/Sydney,1.04,0.99,monthly,1,2024-06-01,{move_out},5,0,0,"
        f"0,false,false,,{product},{start},{end}"
    )


def _a1_month(start: dt.date, days: int) -> pl.DataFrame:
    return meter_frame(days=days, start=start).filter(pl.col("nmi") == NMIS["A1"])


def _bills(store: Store) -> list[tuple[object, ...]]:
    return store.query(
        "SELECT product, period_start, period_end, status, total_inc_gst FROM bills"
        " WHERE status IN ('issued', 'held', 'draft') ORDER BY period_start, product"
    ).fetchall()


def test_a_cycle_with_one_product_segment_held_is_held_whole_and_issued_whole_later(
    tmp_path: Path,
) -> None:
    """A1 moves from sh-flat to sh-tou on 15 July and the reads of 20 July are missing: the
    sh-tou segment is held, and so is the sh-flat one (a cycle is issued whole). Once the reads
    arrive, August's run issues both July segments, each once. The old code issued 1-15 July,
    held 15 July - 1 August, and never billed the held segment again (run exit 0)."""
    cfg_path = build_inbox(tmp_path)
    _customers(
        tmp_path,
        [_a1("", "sh-flat", "2024-06-01", "2024-07-15"), _a1("", "sh-tou", "2024-07-15", "")],
    )
    july = _a1_month(JUL, 31)
    missing = dt.date(2024, 7, 20)
    meter = tmp_path / "inbox" / "meter"
    write_nem12(july.filter(pl.col("day") != missing), meter / "NEM12_retailer_202407.csv")
    cfg = load_config(cfg_path)
    with Store.open(tmp_path / "store.duckdb") as store:
        first = run_nightly(store, cfg, JUL, dt.date(2024, 7, 31))
        assert first.exit_code == ExitCode.HELD
        assert _bills(store) == [
            ("sh-flat", JUL, dt.date(2024, 7, 15), "held", None),
            ("sh-tou", dt.date(2024, 7, 15), AUG, "held", None),
        ]
        reason = store.query(
            "SELECT hold_reason FROM bills WHERE product = 'sh-flat' AND status = 'held'"
        ).fetchall()[0][0]
        assert "sh-tou" in reason and "missing 48 import (E1) read(s)" in reason
        write_nem12(july.filter(pl.col("day") == missing), meter / "NEM12_late_20240720.csv")
        write_nem12(_a1_month(AUG, 31), meter / "NEM12_202408.csv")
        price_csv(tmp_path / "inbox" / "prices" / "PRICE_AND_DEMAND_202408_NSW1.csv", 31, AUG)
        second = run_nightly(store, cfg, AUG, dt.date(2024, 8, 31))
        assert second.exit_code == ExitCode.OK, second.message
        issued = store.query(
            "SELECT product, period_start, period_end, count(*), sum(total_inc_gst) FROM bills"
            " WHERE status = 'issued' GROUP BY ALL ORDER BY period_start"
        ).fetchall()
        assert [r[:4] for r in issued] == [
            ("sh-flat", JUL, dt.date(2024, 7, 15), 1),
            ("sh-tou", dt.date(2024, 7, 15), AUG, 1),
            ("sh-tou", AUG, SEP, 1),
        ]
        # the sh-flat segment is billed as the old code billed it, once its cycle is whole
        assert issued[0][4] == Decimal("114.35")
        assert all(isinstance(r[4], Decimal) and r[4] > 0 for r in issued)
        assert store.query("SELECT count(*) FROM bills WHERE status = 'held'").fetchall() == [(0,)]


def test_a_cycle_never_billed_long_before_the_range_is_billed_by_the_next_close(
    tmp_path: Path,
) -> None:
    """A1 moved in on 1 July; its reads from then on were settled by a run of July to November
    that had no customer row for it (A2's only), so none of its cycles was billed. Its row
    arrives with December's run: that run bills every cycle since the move-in, July to
    December, each once. The old code looked back only four months (August to December), so
    July was never billed (and the run exited 0)."""
    cfg_path = build_inbox(tmp_path)
    dec, jan = dt.date(2024, 12, 1), dt.date(2025, 1, 1)
    a2 = (
        f"A2,{NMIS['A2']},NSW1,Australia/Sydney,1.04,0.99,monthly,1,2024-07-01,,5,0,0,0,false,"
        "false,,sh-flat,2024-07-01,"
    )
    _customers(tmp_path, [a2])
    inbox = tmp_path / "inbox"
    frame = meter_frame(days=(jan - JUL).days, start=JUL)
    write_nem12(
        frame.filter(pl.col("nmi").is_in([NMIS["A1"], NMIS["A2"]])),
        inbox / "meter" / "NEM12_retailer_202407.csv",
    )
    price_csv(inbox / "prices" / "PRICE_AND_DEMAND_2024H2_NSW1.csv", (jan - AUG).days, AUG)
    cfg = load_config(cfg_path)
    late = _a1("", "sh-flat", "2024-07-01", "").replace(",2024-06-01,,5,", ",2024-07-01,,5,")
    with Store.open(tmp_path / "store.duckdb") as store:
        first = run_nightly(store, cfg, JUL, dec - dt.timedelta(days=1))
        assert first.exit_code == ExitCode.OK, first.message
        assert store.query("SELECT count(*) FROM bills WHERE account = 'A1'").fetchall() == [(0,)]
        (inbox / "customers" / "customers_late.csv").write_text(
            ",".join(COLUMNS) + "\n" + late + "\n"
        )
        december = run_nightly(store, cfg, dec, jan - dt.timedelta(days=1))
        assert december.exit_code == ExitCode.OK, december.message
        issued = store.query(
            "SELECT period_start, count(*) FROM bills WHERE account = 'A1' AND status = 'issued'"
            " GROUP BY ALL ORDER BY 1"
        ).fetchall()
        assert issued == [(dt.date(2024, m, 1), 1) for m in range(7, 13)]


def _moved_out_with_a_reread(tmp_path: Path) -> tuple[Path, Path]:
    """A1 moves out on 20 July; July's run issues its bill of 1-20 July (157.44 inc GST); an
    August re-read lowers 3 July (true 155.83). Returns (config path, inbox)."""
    cfg_path = build_inbox(tmp_path)
    _customers(tmp_path, [_a1("2024-07-20", "sh-flat", "2024-06-01", "")])
    inbox = tmp_path / "inbox"
    write_nem12(_a1_month(JUL, 31), inbox / "meter" / "NEM12_retailer_202407.csv")
    return cfg_path, inbox


def _reread(inbox: Path, day: dt.date, bump: float, sent: dt.datetime, name: str) -> None:
    reread = meter_frame(days=1, start=day, bump=bump).filter(
        (pl.col("nmi") == NMIS["A1"]) & (pl.col("suffix") == "E1")
    )
    write_nem12(reread.with_columns(update_datetime=sent), inbox / "meter" / name)


def _july_issued_then_reread(store: Store, cfg: NightlyConfig, inbox: Path) -> str:
    """Run July (A1's bill of 1-20 July issued), then put August's re-read of 3 July (-0.1
    kWh an interval) and prices in the inbox; return the July bill's id."""
    assert run_nightly(store, cfg, JUL, dt.date(2024, 7, 31)).exit_code == ExitCode.OK
    (july,) = store.query(
        "SELECT bill_id FROM bills WHERE status = 'issued' AND period_end = DATE '2024-07-20'"
    ).fetchall()[0]
    _reread(inbox, dt.date(2024, 7, 3), -0.1, dt.datetime(2024, 8, 20), "NEM12_rev.csv")
    price_csv(inbox / "prices" / "PRICE_AND_DEMAND_202408_NSW1.csv", 31, AUG)
    return str(july)


def test_a_moved_out_account_gets_a_final_adjustment_bill(tmp_path: Path) -> None:
    """A1 moved out on 20 July and its July bill (1-20 July, 157.44 inc GST) is issued. An
    August re-read of 3 July makes the true amount 155.83: no later cycle bill of A1 will come,
    so August's close issues a final adjustment bill (kind ``final_adjustment``) with the two
    adjustment lines, credit -157.44 and rebill 155.83: a refund of 1.61, the adjustment
    applied to it. A September re-read of 4 July (true amount T2) makes a second one, crediting
    what is now charged (155.83) and charging T2; September's run with nothing new for A1 makes
    none. Until this change the refund stayed pending for good (reported every run)."""
    cfg_path, inbox = _moved_out_with_a_reread(tmp_path)
    cfg = load_config(cfg_path)
    with Store.open(tmp_path / "store.duckdb") as store:
        july = _july_issued_then_reread(store, cfg, inbox)
        august = run_nightly(store, cfg, AUG, dt.date(2024, 8, 31))
        assert august.exit_code == ExitCode.OK, august.message
        bill = august.manifest["stages"]["bill"]
        assert bill["adjustments_without_target"] == []
        assert bill["final_adjustment_bills"] == 1
        finals = store.query(
            "SELECT bill_id, period_start, period_end, product, status, total_ex_gst + gst,"
            " total_inc_gst FROM bills WHERE kind = 'final_adjustment' ORDER BY bill_id"
        ).fetchall()
        assert [f[1:] for f in finals] == [
            (JUL, dt.date(2024, 7, 20), "sh-flat", "issued", Decimal("-1.61"), Decimal("-1.61"))
        ]
        final = finals[0][0]
        assert final.startswith("A1/final-adjustment/2024-08-31/r")
        lines = store.query(
            "SELECT line_no, component, amount_inc_gst, date_from, date_to FROM bill_lines"
            " WHERE bill_id = ? ORDER BY line_no",
            [final],
        ).fetchall()
        assert lines == [
            (1, "Adjustment: credit", Decimal("-157.44"), JUL, dt.date(2024, 7, 19)),
            (2, "Adjustment: rebill", Decimal("155.83"), JUL, dt.date(2024, 7, 19)),
        ]
        notes = store.query(
            "SELECT DISTINCT explanation FROM bill_lines WHERE bill_id = ?", [final]
        ).fetchall()
        assert notes == [
            (
                f"linked to issued bill {july} (issued bills never change; corrections are lines"
                " on the final adjustment bill of an account that has moved out)",
            )
        ]
        assert store.query(
            "SELECT status, applied_to_bill_id FROM bill_adjustments"
        ).fetchall() == [("applied", final)]
        # explain: no intervals of its own, its lines match the adjustment it carries
        ex = explain_bill(store, final)
        assert ex.reproduced is True and ex.intervals.height == 0
        # the final bill is issued (hashed at issue, audited) and in the run's snapshot
        assert store.query(
            "SELECT count(*) FROM bill_issues WHERE bill_id = ?", [final]
        ).fetchall() == [(1,)]
        assert august.snapshot is not None
        published = pl.read_parquet(Path(august.snapshot) / "bills.parquet")
        assert published.filter(pl.col("bill_id") == final)["kind"].to_list() == [
            "final_adjustment"
        ]

        _reread(inbox, dt.date(2024, 7, 4), 0.2, dt.datetime(2024, 9, 20), "NEM12_rev2.csv")
        price_csv(inbox / "prices" / "PRICE_AND_DEMAND_202409_NSW1.csv", 30, SEP)
        september = run_nightly(store, cfg, SEP, dt.date(2024, 9, 30))
        assert september.exit_code == ExitCode.OK, september.message
        assert september.manifest["stages"]["bill"]["final_adjustment_bills"] == 1
        rows = store.query(
            "SELECT a.status, a.credit_ex_gst + a.credit_gst, a.rebill_ex_gst + a.rebill_gst,"
            " b.total_inc_gst, b.kind FROM bill_adjustments a"
            " JOIN bills b ON b.bill_id = a.applied_to_bill_id"
            " ORDER BY a.detected_file_id"
        ).fetchall()
        assert rows[0] == ("applied", Decimal("-157.44"), Decimal("155.83"), Decimal("-1.61"),
                           "final_adjustment")  # fmt: skip
        status, credit, truth, total, kind = rows[1]
        assert (status, credit, kind) == ("applied", Decimal("-155.83"), "final_adjustment")
        assert truth > Decimal("155.83") and total == credit + truth
        # the next run, with nothing new, makes no final bill
        october = run_nightly(store, cfg, dt.date(2024, 10, 1), dt.date(2024, 10, 1))
        assert october.exit_code == ExitCode.OK, october.message
        assert october.manifest["stages"]["bill"]["final_adjustment_bills"] == 0
        assert store.query(
            "SELECT count(*) FROM bills WHERE kind = 'final_adjustment' AND status = 'issued'"
        ).fetchall() == [(2,)]
        assert july in {
            r[0] for r in store.query("SELECT original_bill_id FROM bill_adjustments").fetchall()
        }
    # the CLI explains it (no intervals to drill into: an empty drill-down, not a crash)
    res = CliRunner().invoke(
        app, ["explain", "bill", final, "--db", str(tmp_path / "store.duckdb")], env=WIDE
    )
    assert res.exit_code == 0, res.output
    assert "adjustment lines against bill_adjustments: matches" in res.output


def test_a_revision_that_changes_nothing_leaves_no_final_bill(tmp_path: Path) -> None:
    """The same July reads sent again with a later UpdateDateTime: A1's July bill is revised
    (a newer file) but its true amount is what was charged, so no adjustment is stored. The
    final adjustment draft made for it has no line and is dropped, with its billing run."""
    cfg_path, inbox = _moved_out_with_a_reread(tmp_path)
    cfg = load_config(cfg_path)
    with Store.open(tmp_path / "store.duckdb") as store:
        assert run_nightly(store, cfg, JUL, dt.date(2024, 7, 31)).exit_code == ExitCode.OK
        _reread(inbox, dt.date(2024, 7, 3), 0.0, dt.datetime(2024, 8, 20), "NEM12_same.csv")
        price_csv(inbox / "prices" / "PRICE_AND_DEMAND_202408_NSW1.csv", 31, AUG)
        august = run_nightly(store, cfg, AUG, dt.date(2024, 8, 31))
        assert august.exit_code == ExitCode.OK, august.message
        bill = august.manifest["stages"]["bill"]
        assert bill["final_adjustment_bills"] == 0 and bill["adjustments"] == 0
        assert store.query(
            "SELECT count(*) FROM bills WHERE kind = 'final_adjustment'"
        ).fetchall() == [(0,)]
        assert store.query(
            "SELECT count(*) FROM billing_runs WHERE notes LIKE 'final adjustment%'"
        ).fetchall() == [(0,)]
        assert store.query("SELECT count(*) FROM bill_adjustments").fetchall() == [(0,)]


def test_with_final_bills_off_a_moved_out_accounts_adjustment_is_reported(
    tmp_path: Path,
) -> None:
    """``final_adjustment_bills = false``: the refund of the first test has no bill to go on.
    It stays pending, and every run reports it (bill stage and manifest:
    ``adjustments_without_target``) with a warning, for the retailer to settle by hand."""
    cfg_path, inbox = _moved_out_with_a_reread(tmp_path)
    cfg = load_config(cfg_path).model_copy(update={"final_adjustment_bills": False})
    with Store.open(tmp_path / "store.duckdb") as store:
        july = _july_issued_then_reread(store, cfg, inbox)
        for start, end in ((AUG, dt.date(2024, 8, 31)), (SEP, dt.date(2024, 9, 30))):
            result = run_nightly(store, cfg, start, end)
            assert result.exit_code == ExitCode.OK, result.message
            bill = result.manifest["stages"]["bill"]
            assert bill["adjustments_without_target"] == [[july, "A1", "pending"]]
            assert bill["final_adjustment_bills"] == 0
        assert store.query(
            "SELECT status, credit_ex_gst + credit_gst, rebill_ex_gst + rebill_gst"
            " FROM bill_adjustments"
        ).fetchall() == [("pending", Decimal("-157.44"), Decimal("155.83"))]
        assert store.query("SELECT count(*) FROM bills WHERE kind <> 'cycle'").fetchall() == [(0,)]


STOP_FINALS = Audit(
    "no_final_adjustment_bill",
    "test audit: a final adjustment bill about to be issued",
    "SELECT b.bill_id, b.status FROM bills b WHERE {to_issue} AND b.kind = 'final_adjustment'",
    ("bill_issues",),
)


@pytest.mark.parametrize("final_bills", [True, False])
def test_a_final_draft_stopped_by_a_failed_audit_does_not_outlive_the_next_close(
    tmp_path: Path, final_bills: bool
) -> None:
    """August's final adjustment draft (the refund of 1.61 of the first test) is stopped by a
    failed audit: it stays a draft and the adjustment pending. The next close supersedes it
    whatever it drafts: with final bills on, it drafts and issues A1 a new one; with them
    turned off, it drafts none and reports the adjustment pending. Before, the stopped draft
    stayed a draft for good in the second case."""
    cfg_path, inbox = _moved_out_with_a_reread(tmp_path)
    cfg = load_config(cfg_path)
    finals = (
        "SELECT status, total_inc_gst FROM bills WHERE kind = 'final_adjustment' ORDER BY status"
    )
    with Store.open(tmp_path / "store.duckdb") as store:
        july = _july_issued_then_reread(store, cfg, inbox)
        with added_audit(BILL_AUDITS, STOP_FINALS):
            august = run_nightly(store, cfg, AUG, dt.date(2024, 8, 31))
        assert august.exit_code == ExitCode.AUDIT_FAILED, august.message
        assert store.query(finals).fetchall() == [("draft", Decimal("-1.61"))]
        price_csv(inbox / "prices" / "PRICE_AND_DEMAND_202409_NSW1.csv", 30, SEP)
        cfg = cfg.model_copy(update={"final_adjustment_bills": final_bills})
        september = run_nightly(store, cfg, SEP, dt.date(2024, 9, 30))
        assert september.exit_code == ExitCode.OK, september.message
        bill = september.manifest["stages"]["bill"]
        adjustment = store.query("SELECT status FROM bill_adjustments").fetchall()
        if final_bills:
            assert store.query(finals).fetchall() == [
                ("issued", Decimal("-1.61")),
                ("superseded", Decimal("-1.61")),
            ]
            assert bill["final_adjustment_bills"] == 1 and adjustment == [("applied",)]
        else:
            assert store.query(finals).fetchall() == [("superseded", Decimal("-1.61"))]
            assert bill["adjustments_without_target"] == [[july, "A1", "pending"]]
            assert adjustment == [("pending",)]


def _nightly(
    root: Path, start: dt.date, end: dt.date, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return nightly_cli(root, "--from", start.isoformat(), "--to", end.isoformat(), env=env)


def _july_then_reread(root: Path) -> None:
    """The moved-out A1 with July run (issued) and August's inputs (a re-read, prices) waiting."""
    _, inbox = _moved_out_with_a_reread(root)
    assert _nightly(root, JUL, dt.date(2024, 7, 31)).returncode == 0
    _reread(inbox, dt.date(2024, 7, 3), -0.1, dt.datetime(2024, 8, 20), "NEM12_rev.csv")
    price_csv(inbox / "prices" / "PRICE_AND_DEMAND_202408_NSW1.csv", 31, AUG)


BILL_TABLES = {
    "bills": "SELECT * EXCLUDE (created_at) FROM bills ORDER BY ALL",
    "bill_lines": "SELECT * FROM bill_lines ORDER BY ALL",
    "bill_issues": "SELECT bill_id, nightly_run_id, content_sha256 FROM bill_issues ORDER BY ALL",
    "bill_adjustments": "SELECT * FROM bill_adjustments ORDER BY ALL",
    "billing_runs": "SELECT run_id, period_start, period_end, status, bills FROM billing_runs"
    " ORDER BY ALL",
}


def _bill_tables(root: Path) -> dict[str, list[tuple[object, ...]]]:
    with Store.open(root / "store.duckdb", read_only=True) as s:
        return {name: s.con.execute(sql).fetchall() for name, sql in BILL_TABLES.items()}


@pytest.mark.parametrize("point", ["bill.after_final_drafts", "bill.before_issue_commit"])
def test_killed_with_a_final_adjustment_bill_drafted_the_rerun_equals_uninterrupted(
    tmp_path: Path, point: str
) -> None:
    """August's run killed (SIGKILL) once the final adjustment draft is written, or inside
    the issue transaction: the rerun drafts the same bill (the attempt's draft replaced, not
    doubled) and the bill tables equal an uninterrupted run's, one final bill issued."""
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    for root in (ref, killed):
        _july_then_reread(root)
    aug_end = dt.date(2024, 8, 31)
    assert _nightly(ref, AUG, aug_end).returncode == 0
    died = _nightly(killed, AUG, aug_end, env={"FAIRSHARE_FAILPOINT": point})
    assert died.returncode == -signal.SIGKILL, died.stdout + died.stderr
    rerun = _nightly(killed, AUG, aug_end)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    want = _bill_tables(ref)
    assert _bill_tables(killed) == want
    finals = [b for b in want["bills"] if b[-1] == "final_adjustment"]
    assert len(finals) == 1 and finals[0][14] == "issued"
