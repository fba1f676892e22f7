"""The month-end close picks up every cycle it should, once: a cycle cut by a product switch
with one segment held, a cycle of a customer row that arrived late, an adjustment of an account
that has moved out (settlement/closing.py, steps 1 and 4)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import polars as pl

from settlement.config import load_config
from settlement.customers import COLUMNS
from settlement.nem12_writer import write_nem12
from settlement.nightly import run_nightly
from settlement.store import Store
from tariffs.errors import ExitCode
from tests.nightly_fixtures import NMIS, build_inbox, meter_frame, price_csv

JUL, AUG, SEP = dt.date(2024, 7, 1), dt.date(2024, 8, 1), dt.date(2024, 9, 1)


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


def test_a_pending_adjustment_of_a_moved_out_account_is_reported(tmp_path: Path) -> None:
    """A1 moves out on 20 July; its July bill (1-20 July) is issued; an August re-read lowers 3
    July (true 155.83 against 157.44 charged, inc GST). The refund has no later bill of A1 to
    go on: it stays pending, and every run reports it (bill stage and manifest:
    ``adjustments_without_target``) with a warning, until it is settled by hand. The old code
    kept it pending silently, both runs exit 0 with nothing said."""
    cfg_path = build_inbox(tmp_path)
    _customers(tmp_path, [_a1("2024-07-20", "sh-flat", "2024-06-01", "")])
    inbox = tmp_path / "inbox"
    write_nem12(_a1_month(JUL, 31), inbox / "meter" / "NEM12_retailer_202407.csv")
    cfg = load_config(cfg_path)
    with Store.open(tmp_path / "store.duckdb") as store:
        assert run_nightly(store, cfg, JUL, dt.date(2024, 7, 31)).exit_code == ExitCode.OK
        (july,) = store.query(
            "SELECT bill_id FROM bills WHERE status = 'issued' AND period_end = DATE '2024-07-20'"
        ).fetchall()[0]
        reread = meter_frame(days=1, start=dt.date(2024, 7, 3), bump=-0.1).filter(
            (pl.col("nmi") == NMIS["A1"]) & (pl.col("suffix") == "E1")
        )
        write_nem12(
            reread.with_columns(update_datetime=dt.datetime(2024, 8, 20)),
            inbox / "meter" / "NEM12_rev.csv",
        )
        price_csv(inbox / "prices" / "PRICE_AND_DEMAND_202408_NSW1.csv", 31, AUG)
        for start, end in ((AUG, dt.date(2024, 8, 31)), (SEP, dt.date(2024, 9, 30))):
            result = run_nightly(store, cfg, start, end)
            assert result.exit_code == ExitCode.OK, result.message
            bill = result.manifest["stages"]["bill"]
            assert bill["adjustments_without_target"] == [[july, "A1", "pending"]]
        assert store.query(
            "SELECT status, credit_ex_gst + credit_gst, rebill_ex_gst + rebill_gst"
            " FROM bill_adjustments"
        ).fetchall() == [("pending", Decimal("-157.44"), Decimal("155.83"))]
