"""Revisions of a revised bill: the credit is of what was charged, never of a written-off rebill.

The rule (settlement/closing.py, step 3): for an issued bill B with issued amount I, the amount
charged C is I plus credit + rebill + write-off of B's earlier adjustments on a bill or pending
(a fully written-off one nets to zero). A revision with true amount T credits C and rebills T;
if T > C (inc GST) and B is wholly past the back-billing limit, a write-off line of -(T - C)
keeps the charge at C. So (a limit part-way through B: the section on it below):

    C_0 = I;  C_k = C_{k-1} if T_k > C_{k-1} and revision k is past the limit, else T_k

where revision k is past the limit when it is so at its detection or on the night a bill takes
it (a pending revision is priced again against the limit of the run that attaches it: the last
section), and in particular C_n <= T_n, C_n = T_n whenever the last revision is recoverable, and with
every revision past the limit C_n = min(I, T_1, ..., T_n). The property test checks that the
customer's charge (I plus every adjustment line on their later bills) follows this model
exactly after any sequence of revisions, attached on the night or left pending for later ones.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from settlement.closing import (
    CloseResult,
    _attach,
    _issue,
    _limit_day,
    _record_adjustments,
    _reprice_pending,
)
from settlement.config import load_config
from settlement.nem12_writer import write_nem12
from settlement.nightly import run_nightly
from settlement.store import Store
from tariffs.errors import ExitCode
from tests.nightly_fixtures import DAYS, START, build_inbox, meter_frame, price_csv

END = START + dt.timedelta(days=DAYS - 1)
CENT = Decimal("0.01")

# ---------------------------------------------------------------------------------------------
# End to end: the reviewer's double revision, back_billing_months = 0 (every undercharge of the
# July bill is past the limit by August).
# ---------------------------------------------------------------------------------------------


def _month(root: Path, start: dt.date, days: int, bump: float, updated: dt.datetime) -> None:
    """A month of reads and prices, plus a re-read of 3 July's import with ``bump`` kWh added
    to every interval (replacing any earlier re-read: later UpdateDateTime)."""
    tag = f"{start:%Y%m}"
    inbox = root / "inbox"
    write_nem12(meter_frame(days=days, start=start), inbox / "meter" / f"NEM12_{tag}.csv")
    price_csv(inbox / "prices" / f"PRICE_AND_DEMAND_{tag}_NSW1.csv", days=days, start=start)
    reread = meter_frame(days=1, start=dt.date(2024, 7, 3), bump=bump).filter(
        pl.col("suffix") == "E1"
    )
    write_nem12(
        reread.with_columns(update_datetime=updated), inbox / "meter" / f"NEM12_rev_{tag}.csv"
    )


@pytest.fixture(scope="module")
def july_august(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """July issued; August re-reads 3 July +0.10 kWh/interval: written off (limit 0 months)."""
    root = tmp_path_factory.mktemp("revisions")
    build_inbox(root)
    cfg = load_config(root / "fairshare.toml").model_copy(update={"back_billing_months": 0})
    with Store.open(root / "store.duckdb") as store:
        assert run_nightly(store, cfg, START, END).exit_code == ExitCode.OK
        _month(root, dt.date(2024, 8, 1), 31, 0.10, dt.datetime(2024, 8, 20))
        aug = run_nightly(store, cfg, dt.date(2024, 8, 1), dt.date(2024, 8, 31))
        assert aug.exit_code == ExitCode.OK, aug.message
    return root


@pytest.fixture
def september(july_august: Path, tmp_path: Path) -> Iterator[tuple[Path, Store]]:
    """A copy of the July/August store; the test writes September's inbox and runs it."""
    root = tmp_path / "root"
    shutil.copytree(july_august, root)
    store = Store.open(root / "store.duckdb")
    try:
        yield root, store
    finally:
        store.close()


def _run_september(root: Path, store: Store, bump: float) -> None:
    cfg = load_config(root / "fairshare.toml").model_copy(update={"back_billing_months": 0})
    _month(root, dt.date(2024, 9, 1), 30, bump, dt.datetime(2024, 9, 20))
    result = run_nightly(store, cfg, dt.date(2024, 9, 1), dt.date(2024, 9, 30))
    assert result.exit_code == ExitCode.OK, result.message


def _trail(store: Store, account: str) -> list[tuple[object, ...]]:
    """(status, credit, rebill) per revision of the account's July bill, in detection order."""
    return store.query(
        "SELECT status, credit_ex_gst, rebill_ex_gst FROM bill_adjustments WHERE account = ?"
        " ORDER BY detected_file_id",
        [account],
    ).fetchall()


def _adjustment_lines(store: Store, account: str) -> list[tuple[object, ...]]:
    return store.query(
        "SELECT b.period_start, l.component, l.amount_ex_gst FROM bill_lines l JOIN bills b"
        " USING (bill_id) WHERE b.account = ? AND l.component LIKE 'Adjustment%'"
        " ORDER BY b.period_start, l.line_no",
        [account],
    ).fetchall()


def _net(store: Store) -> dict[str, tuple[Decimal, Decimal]]:
    """Per account: (sum of adjustment lines ex GST, inc GST) over all later bills."""
    rows = store.query(
        "SELECT b.account, sum(l.amount_ex_gst), sum(l.amount_inc_gst) FROM bill_lines l"
        " JOIN bills b USING (bill_id) WHERE l.component LIKE 'Adjustment%' GROUP BY ALL"
    ).fetchall()
    return {a: (ex, inc) for a, ex, inc in rows}


def _issued_july(store: Store, account: str) -> Decimal:
    rows = store.query(
        "SELECT total_ex_gst FROM bills WHERE account = ? AND status = 'issued'"
        " AND period_start = DATE '2024-07-01'",
        [account],
    ).fetchall()
    assert len(rows) == 1
    value = rows[0][0]
    assert isinstance(value, Decimal)
    return value


AUG, SEP = dt.date(2024, 8, 1), dt.date(2024, 9, 1)
D = Decimal
# the adjustment lines of the bills, in line order
ADJUSTMENT_LINES = (
    "SELECT component, amount_ex_gst, gst FROM bill_lines"
    " WHERE component LIKE 'Adjustment%' ORDER BY line_no"
)


def test_written_off_undercharge_revised_again_upwards_nets_to_zero(
    september: tuple[Path, Store],
) -> None:
    """Hand-worked, A1 (sh-flat, energy 0.3050 $/kWh ex GST): July issued 234.03. August's
    re-read adds 0.10 x 48 = 4.8 kWh: true 235.49 (+1.46), past the limit, written off; the
    customer is still charged 234.03. September's re-read is +0.05 x 48 = 2.4 kWh over the
    original: true 234.76 (+0.73 on what was charged), past the limit, written off too. The
    September credit is of the 234.03 charged, not of August's written-off 235.49, so the
    customer's net over both revisions is 0 (was -0.73: a refund of money never charged)."""
    root, store = september
    _run_september(root, store, 0.05)
    assert _issued_july(store, "A1") == D("234.03")
    assert _trail(store, "A1") == [
        ("applied_written_off", D("-234.03"), D("235.49")),
        ("applied_written_off", D("-234.03"), D("234.76")),
    ]
    assert _adjustment_lines(store, "A1") == [
        (AUG, "Adjustment: credit", D("-234.03")),
        (AUG, "Adjustment: rebill", D("235.49")),
        (AUG, "Adjustment: back-billing limit", D("-1.46")),
        (SEP, "Adjustment: credit", D("-234.03")),
        (SEP, "Adjustment: rebill", D("234.76")),
        (SEP, "Adjustment: back-billing limit", D("-0.73")),
    ]
    # every account: both re-reads add energy, both undercharges are written off, net 0
    assert set(_net(store)) == {"A1", "A2", "A3"}
    assert all(ex == 0 and inc == 0 for ex, inc in _net(store).values())
    failing = store.query(
        "SELECT audit FROM audit_results WHERE failing_rows > 0 AND run_id ="
        " (SELECT max(run_id) FROM runs WHERE date_from = DATE '2024-09-01')"
    ).fetchall()
    assert failing == []


def test_written_off_undercharge_revised_below_issue_refunds_only_what_was_charged(
    september: tuple[Path, Store],
) -> None:
    """Hand-worked, A1: September's re-read is 0.05 x 48 = 2.4 kWh *below* the original read:
    true 233.30, 0.73 under the 234.03 charged (August's +1.46 was written off, never charged).
    The refund is 0.73 (credit 234.03, rebill 233.30), not 2.19 (credit of the written-off
    235.49): the customer ends charged exactly the true amount."""
    root, store = september
    _run_september(root, store, -0.05)
    assert _trail(store, "A1") == [
        ("applied_written_off", D("-234.03"), D("235.49")),
        ("applied", D("-234.03"), D("233.30")),
    ]
    assert _adjustment_lines(store, "A1")[3:] == [
        (SEP, "Adjustment: credit", D("-234.03")),
        (SEP, "Adjustment: rebill", D("233.30")),
    ]
    # every account: charged (issued + adjustment lines) == the true (September rebill) amount
    true = dict(
        store.query(
            "SELECT account, rebill_ex_gst FROM bill_adjustments WHERE detected_run_id ="
            " (SELECT max(detected_run_id) FROM bill_adjustments)"
        ).fetchall()
    )
    net = _net(store)
    for account in ("A1", "A2", "A3"):
        assert _issued_july(store, account) + net[account][0] == true[account]
    assert net["A1"][0] == D("-0.73")


# ---------------------------------------------------------------------------------------------
# Property: closing.py's adjustment and issue steps on a synthetic store (no billing engine):
# one issued bill, a sequence of revisions, each night the account's next bill is ready or not.
# ---------------------------------------------------------------------------------------------

BILL = "A1/p/2024-01-01/r1"
PERIOD = (dt.date(2024, 1, 1), dt.date(2024, 2, 1))
RECOVERABLE_DAY = dt.date(2024, 3, 1)  # 9-month limit 2023-06-01: January still recoverable
PAST_LIMIT_DAY = dt.date(2025, 3, 1)  # limit 2024-06-01: January's undercharges written off

BILL_COLS = (
    "bill_id, run_id, account, nmi, period_start, period_end, cycle_start, cycle_end, product,"
    " product_version, currency, total_ex_gst, gst, total_inc_gst, status, hold_reason,"
    " estimated_intervals, shadow, created_at"
)


def _insert_bill(
    store: Store, bill_id: str, run_id: int, start: dt.date, amount: tuple[Decimal, Decimal],
    status: str,
) -> None:  # fmt: skip
    end = (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    ex, tax = amount
    store.con.execute(
        f"INSERT INTO bills ({BILL_COLS}) VALUES (?, ?, 'A1', '4102000001', ?, ?, ?, ?, 'p', '1',"
        " 'AUD', ?, ?, ?, ?, NULL, 0, false, TIMESTAMPTZ '2024-01-01 00:00:00+00')",
        [bill_id, run_id, start, end, start, end, ex, tax, ex + tax, status],
    )
    store.con.execute(
        "INSERT INTO bill_lines VALUES (?, 1, 'Energy', 'energy', 1.0, 'kWh', 0.3, ?, ?, ?,"
        " true, ?, ?, 48, 'energy')",
        [bill_id, ex, tax, ex + tax, start, end - dt.timedelta(days=1)],
    )


def _rebill_night(store: Store, night: int, true: tuple[Decimal, Decimal]) -> None:
    """Night ``night``'s rebill of BILL (billing run 1000 + night) and the file that revised it
    (file ids grow with the nights: detection order)."""
    _insert_bill(store, f"{BILL}/rebill{night}", 1000 + night, PERIOD[0], true, "rebill")
    store.con.execute(
        "INSERT INTO ingested_files (file_id, kind, path, sha256, size_bytes, ingested_at,"
        " status, rows_loaded, rows_duplicate, rows_quarantined, format) VALUES (?, 'meter',"
        " ?, ?, 1, TIMESTAMPTZ '2024-01-01 00:00:00+00', 'loaded', 1, 0, 0, 'nem12')",
        [night, f"f{night}", f"sha{night}"],
    )


def _money(cents: int) -> tuple[Decimal, Decimal]:
    """(ex GST, GST): GST 10 % rounded to the cent, like a taxable line."""
    ex = Decimal(cents) * CENT
    return ex, (ex / 10).quantize(CENT)


def _inc(amount: tuple[Decimal, Decimal]) -> Decimal:
    return amount[0] + amount[1]


@dataclass
class _Stored:
    """A revision the model stores: its night, true amount, whether it is past the limit (at
    its detection or at its attach, whichever is later) and whether it is still pending."""

    run: str
    true: tuple[Decimal, Decimal]
    past: bool
    pending: bool = True


def _model(
    issued: tuple[Decimal, Decimal], stored: list[_Stored]
) -> tuple[list[tuple[object, ...]], tuple[Decimal, Decimal]]:
    """The rows the rule stores for ``stored`` (detection order): (run, credit, rebill, status),
    and the charge after the last."""
    charged, rows = issued, []
    for r in stored:
        written_off = r.past and _inc(r.true) > _inc(charged)
        status = "pending_written_off" if written_off else "pending"
        rows.append((r.run, -charged[0], -charged[1], r.true[0], r.true[1], status))
        charged = charged if written_off else r.true
    return rows, charged


# a revision: (true amount in cents ex GST, recoverable?, is the account's next bill ready?)
REVISION = st.tuples(st.integers(-50, 400), st.booleans(), st.booleans())


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(issued=st.integers(0, 400), revisions=st.lists(REVISION, min_size=1, max_size=4))
# the reviewer's case: written off, then revised up, then below the issued amount
@example(issued=23403, revisions=[(23549, False, True), (23476, False, True)])
@example(issued=23403, revisions=[(23549, False, True), (23330, False, True)])
# two pending revisions of one bill (no next bill on their nights) attached together
@example(issued=100, revisions=[(150, False, False), (120, False, False), (90, True, True)])
# the same truth detected again after a write-off: stored once
@example(issued=100, revisions=[(150, False, True), (150, False, True), (150, False, False)])
# recoverable when detected, past the limit when a bill takes it: written off at attach
@example(issued=100, revisions=[(150, True, False), (150, False, True)])
@example(issued=100, revisions=[(150, True, False), (120, True, False), (130, False, True)])
def test_charge_follows_the_rule_for_any_sequence_of_revisions(
    issued: int, revisions: list[tuple[int, bool, bool]]
) -> None:
    """After any sequence of revisions the customer is charged the model's C (ex GST and GST):
    never more than the latest true amount, exactly it unless a write-off kept it lower, never
    raised past the back-billing limit, and every stored row reads credit = -C, rebill = T. A
    revision is past the limit when the night that detects it or the night that attaches it
    is (each night runs the close's steps in its order: draft, re-price the pending, detect,
    attach, issue)."""
    store = Store.open(":memory:")
    try:
        _insert_bill(store, BILL, 1, PERIOD[0], _money(issued), "issued")
        stored: list[_Stored] = []
        all_past_limit = True
        lowest = _inc(_money(issued))
        month = dt.date(2024, 2, 1)
        past_seen = last_recoverable = False
        last_true: tuple[Decimal, Decimal] | None = None
        for night, (true_cents, recoverable, ready) in enumerate(revisions, 1):
            # the limit of a bill never moves back: once a revision is past it, so are the
            # later ones, whatever day their run ends on
            recoverable = last_recoverable = recoverable and not past_seen
            past_seen = past_seen or not recoverable
            run = f"night{night:02d}"
            true = _money(true_cents)
            as_of = RECOVERABLE_DAY if recoverable else PAST_LIMIT_DAY
            runs = []
            if ready or night == len(revisions):  # the last night always issues a next bill
                _insert_bill(store, f"A1/p/{month}/d", 2000 + night, month, _money(1000), "draft")
                runs = [2000 + night]
                month = (month + dt.timedelta(days=32)).replace(day=1)
                for r in stored:  # what a bill takes is priced at that night's limit
                    r.past = r.past or (r.pending and not recoverable)
            _reprice_pending(store, runs, _limit_day(as_of, 9))
            _rebill_night(store, night, true)
            _record_adjustments(
                store, run, pl.DataFrame({"bill_id": [BILL]}), [1000 + night], as_of, 9,
                CloseResult(),
            )  # fmt: skip
            _, charged = _model(_money(issued), stored)
            written_off = _inc(true) > _inc(charged) and not recoverable
            # nothing stored when nothing is new: the charge stays and the truth is the one
            # charged or the one the latest stored row already wrote off
            if true != charged and not (written_off and true == last_true):
                stored.append(_Stored(run, true, past=not recoverable))
                last_true = true
            all_past_limit &= not recoverable
            lowest = min(lowest, _inc(true))
            _attach(store, runs)
            _issue(store, run, runs, CloseResult())
            for r in stored:
                r.pending = r.pending and not runs
        expected_rows, charged = _model(_money(issued), stored)

        rows = store.query(
            "SELECT detected_run_id, credit_ex_gst, credit_gst, rebill_ex_gst, rebill_gst,"
            " replace(status, 'applied', 'pending')"
            " FROM bill_adjustments ORDER BY detected_file_id"
        ).fetchall()
        assert rows == expected_rows
        ex, tax = store.query(
            "SELECT coalesce(sum(amount_ex_gst), 0), coalesce(sum(gst), 0) FROM bill_lines"
            " WHERE component LIKE 'Adjustment%'"
        ).fetchall()[0]
        # the customer's charge for the bill: issued plus every adjustment line
        paid = (_money(issued)[0] + ex, _money(issued)[1] + tax)
        assert paid == charged
        assert _inc(paid) <= _inc(_money(revisions[-1][0]))
        if last_recoverable:
            assert paid == _money(revisions[-1][0])
        if all_past_limit:
            assert _inc(paid) == lowest
        # every adjustment applied, linked to the issued bill, its lines in detection order
        assert store.query(
            "SELECT count(*) FROM bill_adjustments WHERE status LIKE 'pending%'"
            " OR original_bill_id <> ?",
            [BILL],
        ).fetchall() == [(0,)]
        lines = store.query(
            "SELECT l.amount_ex_gst FROM bill_lines l JOIN bills b USING (bill_id)"
            " WHERE l.component LIKE 'Adjustment%' ORDER BY b.period_start, l.line_no"
        ).fetchall()
        in_order = []
        for _, credit, _, rebill, _, status in expected_rows:
            in_order += [credit, rebill] + ([-(credit + rebill)] if "written" in status else [])
        assert [r[0] for r in lines] == in_order
        assert store.query("SELECT * FROM audit_bill_line_sums").fetchall() == []
    finally:
        store.close()


def test_pending_revisions_of_one_bill_attach_in_detection_order_not_table_order() -> None:
    """Two pending adjustments of the same bill tie on the bill id: their lines come in detection
    order (detected_file_id, then run id: the key), whatever order the table holds them in, so
    line numbers and snapshots are the same on every run."""
    store = Store.open(":memory:")
    try:
        _insert_bill(store, BILL, 1, PERIOD[0], _money(100), "issued")
        for run, file_id, credit, rebill in (
            ("night02", 2, "-1.50", "1.20"),  # the later revision, stored first
            ("night01", 1, "-1.00", "1.50"),
        ):
            store.con.execute(
                "INSERT INTO bill_adjustments (original_bill_id, rebill_bill_id, account,"
                " detected_run_id, detected_file_id, credit_ex_gst, credit_gst, rebill_ex_gst,"
                " rebill_gst, status, hold_reason, applied_to_bill_id) VALUES (?, 'rebill', 'A1',"
                " ?, ?, ?, 0, ?, 0, 'pending', '', NULL)",
                [BILL, run, file_id, Decimal(credit), Decimal(rebill)],
            )
        _insert_bill(store, "A1/p/2024-02-01/d", 2000, dt.date(2024, 2, 1), _money(1000), "draft")
        _attach(store, [2000])
        _issue(store, "night03", [2000], CloseResult())
        lines = store.query(
            "SELECT line_no, component, amount_ex_gst FROM bill_lines"
            " WHERE component LIKE 'Adjustment%' ORDER BY line_no"
        ).fetchall()
        assert lines == [
            (2, "Adjustment: credit", D("-1.00")),
            (3, "Adjustment: rebill", D("1.50")),
            (4, "Adjustment: credit", D("-1.50")),
            (5, "Adjustment: rebill", D("1.20")),
        ]
    finally:
        store.close()


# ---------------------------------------------------------------------------------------------
# The back-billing limit part-way through a bill: pro rata by days (schema v7).
# ---------------------------------------------------------------------------------------------


def _revise(
    store: Store, night: int, true: tuple[Decimal, Decimal], limit: dt.date
) -> tuple[Decimal, Decimal]:
    """One revision of BILL on its own night (limit given as the run's day, 0 months), its
    next bill ready; returns the customer's charge for BILL after it (issued + adjustments)."""
    run = f"night{night:02d}"
    month = dt.date(2024, 2, 1) + dt.timedelta(days=31 * night)
    _insert_bill(
        store, f"A1/p/{month}/d", 2000 + night, month.replace(day=1), _money(1000), "draft"
    )
    _reprice_pending(store, [2000 + night], limit)
    _rebill_night(store, night, true)
    _record_adjustments(
        store, run, pl.DataFrame({"bill_id": [BILL]}), [1000 + night], limit, 0, CloseResult()
    )
    _attach(store, [2000 + night])
    _issue(store, run, [2000 + night], CloseResult())
    ex, tax = store.query(
        "SELECT b.total_ex_gst + coalesce(sum(l.amount_ex_gst), 0),"
        " b.gst + coalesce(sum(l.gst), 0) FROM bills b LEFT JOIN bill_lines l"
        " ON l.component LIKE 'Adjustment%' AND l.explanation LIKE '%' || b.bill_id || '%'"
        " WHERE b.bill_id = ? GROUP BY b.total_ex_gst, b.gst",
        [BILL],
    ).fetchall()[0]
    return ex, tax


def test_limit_inside_the_period_writes_off_only_the_days_before_it() -> None:
    """Hand-worked: January (31 days) issued at 100.00 + 10.00 GST; the true amount is 131.00 +
    13.10. The limit is 11 January: 10 days are past it. Per day the issued amount is 100/31
    and the true one 131/31; the 10 old days keep 100/31, the 21 others take 131/31, so the
    charge is (10 x 100 + 21 x 131) / 31 = 3751 / 31 = 121.00 ex GST and (10 x 10 + 21 x 13.10)
    / 31 = 375.1 / 31 = 12.10 GST: the write-off is 10.00 + 1.00 (the old rule recovered all
    31.00 + 3.10: the limit only counted when the whole bill was past it). The same truth
    detected again, even a month later with every day past the limit, changes nothing (no
    ratchet towards the old days' undercharge); a truth below every day's charge refunds down
    to it."""
    store = Store.open(":memory:")
    try:
        _insert_bill(store, BILL, 1, PERIOD[0], (D("100.00"), D("10.00")), "issued")
        assert _revise(store, 1, (D("131.00"), D("13.10")), dt.date(2024, 1, 11)) == (
            D("121.00"),
            D("12.10"),
        )
        row = store.query(
            "SELECT status, credit_ex_gst, rebill_ex_gst, writeoff_ex_gst, writeoff_gst,"
            " limit_date FROM bill_adjustments"
        ).fetchall()
        assert row == [
            ("applied_written_off", D("-100.00"), D("131.00"), D("-10.00"), D("-1.00"),
             dt.date(2024, 1, 11)),
        ]  # fmt: skip
        lines = store.query(ADJUSTMENT_LINES).fetchall()
        assert lines == [
            ("Adjustment: credit", D("-100.00"), D("-10.00")),
            ("Adjustment: rebill", D("131.00"), D("13.10")),
            ("Adjustment: back-billing limit", D("-10.00"), D("-1.00")),
        ]
        same = (D("131.00"), D("13.10"))
        assert _revise(store, 2, same, dt.date(2024, 1, 11)) == (D("121.00"), D("12.10"))
        assert _revise(store, 3, same, dt.date(2024, 2, 11)) == (D("121.00"), D("12.10"))
        assert _revise(store, 4, (D("93.00"), D("9.30")), dt.date(2024, 2, 11)) == (
            D("93.00"),
            D("9.30"),
        )
        assert store.query("SELECT * FROM audit_bill_line_sums").fetchall() == []
    finally:
        store.close()


# a revision: (true amount in cents ex GST, days of January past the limit then)
PART_REVISION = st.tuples(st.integers(0, 400), st.integers(0, 31))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(issued=st.integers(0, 400), revisions=st.lists(PART_REVISION, min_size=1, max_size=4))
def test_a_limit_part_way_never_recovers_old_days(
    issued: int, revisions: list[tuple[int, int]]
) -> None:
    """Whatever the order of revisions and limits (the limit only moves forward): the charge is
    never above the latest truth, never below its share for the days inside the limit, is the
    truth when no day is past the limit, never rises on a revision with every day past it, and
    a repeated revision changes nothing."""
    revisions = sorted(revisions, key=lambda r: r[1])  # later nights, later limits
    store = Store.open(":memory:")
    try:
        _insert_bill(store, BILL, 1, PERIOD[0], _money(issued), "issued")
        before = _inc(_money(issued))
        for night, (cents, old) in enumerate(revisions, 1):
            true = _money(cents)
            limit = PERIOD[0] + dt.timedelta(days=old)
            charge = _revise(store, 2 * night - 1, true, limit)
            assert _inc(charge) <= _inc(true)
            assert _inc(charge) >= (_inc(true) * (31 - old) / 31).quantize(CENT) - CENT
            if old == 0:
                assert charge == true
            if old == 31:
                assert _inc(charge) <= before
            assert _revise(store, 2 * night, true, limit) == charge
            before = _inc(charge)
    finally:
        store.close()


def test_a_refund_owed_with_the_truth_equal_to_the_charge_is_made() -> None:
    """Review finding: January charged 121.00 + 12.10 after the first revision (10 old days at
    100/31, 21 recent ones at 131/31). The truth then becomes exactly 121.00 + 12.10, the
    amount charged; its recent days were charged 131/31 but are worth 121/31, so they are
    refunded: (10 x 100 + 21 x 121) / 31 = 3541 / 31 = 114.23 and (10 x 10 + 21 x 12.10) / 31
    = 354.1 / 31 = 11.42 GST (nothing was stored, because T = C)."""
    store = Store.open(":memory:")
    try:
        _insert_bill(store, BILL, 1, PERIOD[0], (D("100.00"), D("10.00")), "issued")
        limit = dt.date(2024, 1, 11)
        assert _revise(store, 1, (D("131.00"), D("13.10")), limit) == (D("121.00"), D("12.10"))
        assert _revise(store, 2, (D("121.00"), D("12.10")), limit) == (D("114.23"), D("11.42"))
    finally:
        store.close()


def test_an_earlier_limit_never_recovers_what_a_later_one_wrote_off() -> None:
    """Review finding: January's undercharge written off against a limit past the whole month
    (charge stays 100.00 + 10.00); a later run with an earlier limit (an older range, or a
    longer back_billing_months) recovered it (131.01 + 13.10). The limit of a bill never moves
    back: the latest stored one stands."""
    store = Store.open(":memory:")
    try:
        _insert_bill(store, BILL, 1, PERIOD[0], (D("100.00"), D("10.00")), "issued")
        past = dt.date(2024, 2, 11)
        assert _revise(store, 1, (D("131.00"), D("13.10")), past) == (D("100.00"), D("10.00"))
        early = dt.date(2024, 1, 1)
        assert _revise(store, 2, (D("131.01"), D("13.10")), early) == (D("100.00"), D("10.00"))
        limits = store.query("SELECT limit_date FROM bill_adjustments ORDER BY 1").fetchall()
        assert limits == [(past,), (past,)]
    finally:
        store.close()


def test_the_bill_audits_check_every_draft_to_issue_whenever_it_ended() -> None:
    """Review finding: a July draft issued by a September run (a held bill released) was left
    out of the two audits that filter on the run's date range."""
    from settlement.audits import run_audits

    store = Store.open(":memory:")
    try:
        _insert_bill(store, "A1/p/2024-07-01/d", 7, dt.date(2024, 7, 1), _money(1000), "draft")
        store.con.execute(
            "INSERT INTO bill_lines SELECT * FROM bill_lines WHERE bill_id = 'A1/p/2024-07-01/d'"
        )
        found = {
            a.name: a.failing_rows
            for a in run_audits(store, dt.date(2024, 9, 1), dt.date(2024, 9, 30), draft_runs=[7])
        }
        assert found["issued_bill_ids_and_lines_unique"] == 1
        none = {
            a.name: a.failing_rows
            for a in run_audits(store, dt.date(2024, 9, 1), dt.date(2024, 9, 30))
        }
        assert none["issued_bill_ids_and_lines_unique"] == 0  # not to be issued: not checked
    finally:
        store.close()


def test_the_same_truth_detected_again_on_a_written_off_bill_stores_nothing() -> None:
    """Review finding: January issued at 100.00 + 10.00, the truth 131.00 + 13.10 wholly past
    the limit (written off: the charge stays 110.00). Detected again on two later nights (a
    re-sent file, another channel's re-read), the old code stored a credit / rebill / write-off
    triple each night (-110.00, +144.10, -34.10 inc GST, netting to zero) and counted a
    write-off each time: three triples, three write-offs. Nothing new since the last
    adjustment (its rebill is the truth and the charge does not move): nothing is stored."""
    store = Store.open(":memory:")
    try:
        _insert_bill(store, BILL, 1, PERIOD[0], (D("100.00"), D("10.00")), "issued")
        past = dt.date(2024, 2, 11)
        written_off = []
        for night in (1, 2, 3):
            run = f"night{night:02d}"
            _rebill_night(store, night, (D("131.00"), D("13.10")))
            result = CloseResult()
            _record_adjustments(
                store, run, pl.DataFrame({"bill_id": [BILL]}), [1000 + night], past, 0, result
            )
            written_off.append((result.adjustments, result.written_off))
            month = dt.date(2024, 2 + night, 1)
            _insert_bill(store, f"A1/p/{month}/d", 2000 + night, month, _money(1000), "draft")
            _attach(store, [2000 + night])
            _issue(store, run, [2000 + night], CloseResult())
        assert written_off == [(1, 1), (0, 0), (0, 0)]
        assert store.query(
            "SELECT detected_run_id, status, credit_ex_gst, rebill_ex_gst, writeoff_ex_gst"
            " FROM bill_adjustments"
        ).fetchall() == [("night01", "applied_written_off", D("-100.00"), D("131.00"), D("-31.00"))]
        lines = store.query(
            "SELECT bill_id, component, amount_inc_gst FROM bill_lines"
            " WHERE component LIKE 'Adjustment%' ORDER BY bill_id, line_no"
        ).fetchall()
        assert lines == [
            ("A1/p/2024-03-01/d", "Adjustment: credit", D("-110.00")),
            ("A1/p/2024-03-01/d", "Adjustment: rebill", D("144.10")),
            ("A1/p/2024-03-01/d", "Adjustment: back-billing limit", D("-34.10")),
        ]
        # a new truth is still a new adjustment: lower, it is refunded down to it
        assert _revise(store, 4, (D("90.00"), D("9.00")), past) == (D("90.00"), D("9.00"))
        assert store.query("SELECT count(*) FROM bill_adjustments").fetchall() == [(2,)]
    finally:
        store.close()


# ---------------------------------------------------------------------------------------------
# The limit as of the run that attaches a pending adjustment, not the run that detected it.
# ---------------------------------------------------------------------------------------------


def test_a_pending_undercharge_attached_after_the_limit_passed_is_written_off(
    tmp_path: Path,
) -> None:
    """Hand-worked, A1 (sh-flat), back_billing_months = 1 (a short limit so the test needs three
    months of data, not eleven; 9 months behaves the same). July issued at 234.03 ex GST
    (supply 32.40 + energy 754.126 kWh x 0.305 = 230.01 - feed-in 28.38) + 26.24 GST (3.24 +
    23.00; the feed-in credit carries none). The run of 1 August detects a re-read of 3 July
    (+0.10 kWh x 48 = 4.8 kWh): energy 758.926 x 0.305 = 231.47, true 235.49 + 26.39 GST. Its
    limit is 1 July, so all of July is recoverable: a pending adjustment of +1.46 + 0.15, no
    write-off. No bill takes it that night, and August's bill is held (the reads of 20 August
    are missing), so it is still pending after the run of 2-31 August. The run of 1-30
    September releases August and attaches the adjustment to it: its limit is now 30 August,
    every day of July is past it, so the undercharge may not be recovered: credit -234.03 -
    26.24, rebill +235.49 + 26.39, write-off -1.46 - 0.15, net 0.00 (the charge for July stays
    234.03 + 26.24 = 260.27). The old code kept the pricing of 1 August and back-billed the
    customer 1.46 + 0.15 = 1.61 inc GST for 3 July, two months after the 1-month limit."""
    cfg = load_config(build_inbox(tmp_path)).model_copy(update={"back_billing_months": 1})
    inbox = tmp_path / "inbox"
    missing = dt.date(2024, 8, 20)
    august = meter_frame(days=31, start=AUG)
    reread = meter_frame(days=1, start=dt.date(2024, 7, 3), bump=0.10).filter(
        pl.col("suffix") == "E1"
    )
    with Store.open(tmp_path / "store.duckdb") as store:
        assert run_nightly(store, cfg, START, END).exit_code == ExitCode.OK
        write_nem12(
            reread.with_columns(update_datetime=dt.datetime(2024, 8, 20)),
            inbox / "meter" / "NEM12_rev_20240703.csv",
        )
        write_nem12(august.filter(pl.col("day") != missing), inbox / "meter" / "NEM12_202408.csv")
        price_csv(inbox / "prices" / "PRICE_AND_DEMAND_202408_NSW1.csv", 31, AUG)
        assert run_nightly(store, cfg, AUG, AUG).exit_code == ExitCode.OK
        held = run_nightly(store, cfg, AUG + dt.timedelta(days=1), dt.date(2024, 8, 31))
        assert held.exit_code == ExitCode.HELD, held.message
        pending = "SELECT status, credit_ex_gst, credit_gst, rebill_ex_gst, rebill_gst,"
        pending += " writeoff_ex_gst, writeoff_gst, limit_date FROM bill_adjustments"
        pending += " WHERE account = 'A1'"
        assert store.query(pending).fetchall() == [
            ("pending", D("-234.03"), D("-26.24"), D("235.49"), D("26.39"), D("0.00"),
             D("0.00"), dt.date(2024, 7, 1)),
        ]  # fmt: skip
        write_nem12(august.filter(pl.col("day") == missing), inbox / "meter" / "NEM12_late.csv")
        write_nem12(meter_frame(days=30, start=SEP), inbox / "meter" / "NEM12_202409.csv")
        price_csv(inbox / "prices" / "PRICE_AND_DEMAND_202409_NSW1.csv", 30, SEP)
        sep = run_nightly(store, cfg, SEP, dt.date(2024, 9, 30))
        assert sep.exit_code == ExitCode.OK, sep.message
        assert store.query(pending).fetchall() == [
            ("applied_written_off", D("-234.03"), D("-26.24"), D("235.49"), D("26.39"),
             D("-1.46"), D("-0.15"), dt.date(2024, 8, 30)),
        ]  # fmt: skip
        assert _adjustment_lines(store, "A1") == [
            (AUG, "Adjustment: credit", D("-234.03")),
            (AUG, "Adjustment: rebill", D("235.49")),
            (AUG, "Adjustment: back-billing limit", D("-1.46")),
        ]
        # every account: the re-read adds energy, all of July is past the limit at attach
        assert set(_net(store)) == {"A1", "A2", "A3"}
        assert all(ex == 0 and inc == 0 for ex, inc in _net(store).values())
        assert (
            store.query(
                "SELECT audit FROM audit_results WHERE failing_rows > 0 AND run_id ="
                " (SELECT max(run_id) FROM runs WHERE date_from = DATE '2024-09-01')"
            ).fetchall()
            == []
        )


def _night(
    store: Store, night: int, limit: dt.date, true: tuple[Decimal, Decimal] | None, ready: bool
) -> list[int]:
    """Night ``night`` in the close's order (limit given as the run's day, 0 months): the
    account's next bill drafted when ``ready``, pending adjustments re-priced, a revision of
    BILL to ``true`` detected (if any), attached; returns the draft's run (not issued yet)."""
    runs = []
    if ready:
        month = dt.date(2024, 2, 1) + dt.timedelta(days=31 * night)
        runs = [2000 + night]
        _insert_bill(store, f"A1/p/{month:%Y-%m}/d", runs[0], month.replace(day=1),
                     _money(1000), "draft")  # fmt: skip
    _reprice_pending(store, runs, limit)
    if true is not None:
        _rebill_night(store, night, true)
        _record_adjustments(
            store, f"night{night:02d}", pl.DataFrame({"bill_id": [BILL]}), [1000 + night],
            limit, 0, CloseResult(),
        )  # fmt: skip
    _attach(store, runs)
    return runs


ADJ_ROWS = (
    "SELECT detected_run_id, status, credit_ex_gst, credit_gst, rebill_ex_gst, rebill_gst,"
    " writeoff_ex_gst, writeoff_gst, limit_date FROM bill_adjustments ORDER BY detected_file_id"
)


def test_a_pending_undercharge_is_priced_at_the_limit_of_the_night_a_bill_takes_it() -> None:
    """Hand-worked: January (31 days) issued at 100.00 + 10.00 GST. Night 1 (limit 1 January:
    no day past it) detects a truth of 131.00 + 13.10: pending, +31.00 + 3.10, no write-off;
    no bill takes it. Night 2 drafts the next bill with the limit at 11 January, 10 days of
    January past it: priced as if detected then, (10 x 100 + 21 x 131) / 31 = 3751 / 31 =
    121.00 ex GST and (10 x 10 + 21 x 13.10) / 31 = 375.1 / 31 = 12.10 GST, so the write-off
    is 121.00 - 131.00 = -10.00 and 12.10 - 13.10 = -1.00, and the customer's charge for
    January becomes 121.00 + 12.10. The old code attached night 1's pricing: 131.00 + 13.10,
    recovering 10.00 + 1.00 for the 10 days before the limit. Re-pricing again at the same
    limit (a rerun) or an earlier one (the limit never moves back) changes nothing."""
    store = Store.open(":memory:")
    try:
        _insert_bill(store, BILL, 1, PERIOD[0], (D("100.00"), D("10.00")), "issued")
        _issue(store, "night01", _night(store, 1, PERIOD[0], (D("131.00"), D("13.10")), False),
               CloseResult())  # fmt: skip
        assert store.query(ADJ_ROWS).fetchall() == [
            ("night01", "pending", D("-100.00"), D("-10.00"), D("131.00"), D("13.10"),
             D("0.00"), D("0.00"), PERIOD[0]),
        ]  # fmt: skip
        runs = _night(store, 2, dt.date(2024, 1, 11), None, True)
        repriced = [
            ("night01", "pending_written_off", D("-100.00"), D("-10.00"), D("131.00"),
             D("13.10"), D("-10.00"), D("-1.00"), dt.date(2024, 1, 11)),
        ]  # fmt: skip
        assert store.query(ADJ_ROWS).fetchall() == repriced
        for limit in (dt.date(2024, 1, 11), PERIOD[0]):
            _reprice_pending(store, runs, limit)
            assert store.query(ADJ_ROWS).fetchall() == repriced
        _issue(store, "night02", runs, CloseResult())
        lines = store.query(ADJUSTMENT_LINES).fetchall()
        assert lines == [
            ("Adjustment: credit", D("-100.00"), D("-10.00")),
            ("Adjustment: rebill", D("131.00"), D("13.10")),
            ("Adjustment: back-billing limit", D("-10.00"), D("-1.00")),
        ]
        assert store.query("SELECT * FROM audit_bill_line_sums").fetchall() == []
    finally:
        store.close()


@pytest.mark.parametrize(
    ("second", "rows", "charge"),
    [
        # 131.00 written off to the 100.00 charged; 120.00 is above it too: written off
        (
            (D("120.00"), D("12.00")),
            [("-100.00", "-10.00", "-31.00", "-3.10"), ("-100.00", "-10.00", "-20.00", "-2.00")],
            (D("100.00"), D("10.00")),
        ),
        # 90.00 is below the 100.00 charged: an overcharge is refunded, past the limit or not
        (
            (D("90.00"), D("9.00")),
            [("-100.00", "-10.00", "-31.00", "-3.10"), ("-100.00", "-10.00", "0.00", "0.00")],
            (D("90.00"), D("9.00")),
        ),
    ],
)
def test_two_pending_revisions_are_priced_again_in_detection_order(
    second: tuple[Decimal, Decimal],
    rows: list[tuple[str, str, str, str]],
    charge: tuple[Decimal, Decimal],
) -> None:
    """Hand-worked: January issued at 100.00 + 10.00. Nights 1 and 2 (limit 1 January: all of
    January recoverable) detect 131.00 + 13.10, then ``second``; no bill takes them, so the
    second's credit is of the 131.00 + 13.10 the first will charge. Night 3's bill takes both
    with the limit at 11 February, all of January past it. The first becomes 100.00 + 10.00
    (credit -100.00, rebill 131.00, write-off -31.00; GST -10.00, 13.10, -3.10); the second's
    credit is then of those 100.00 + 10.00, not 131.00 + 13.10, and its rebill is written off
    down to them when above, refunded when below. The old code charged ``second`` (120.00 +
    12.00: 20.00 + 2.00 recovered for days past the limit)."""
    store = Store.open(":memory:")
    try:
        _insert_bill(store, BILL, 1, PERIOD[0], (D("100.00"), D("10.00")), "issued")
        for night, true in ((1, (D("131.00"), D("13.10"))), (2, second)):
            _issue(store, f"night{night:02d}", _night(store, night, PERIOD[0], true, False),
                   CloseResult())  # fmt: skip
        assert [r[2:4] for r in store.query(ADJ_ROWS).fetchall()] == [
            (D("-100.00"), D("-10.00")),
            (D("-131.00"), D("-13.10")),
        ]
        _issue(store, "night03", _night(store, 3, dt.date(2024, 2, 11), None, True),
               CloseResult())  # fmt: skip
        got = store.query(ADJ_ROWS).fetchall()
        assert [(r[2], r[3], r[6], r[7]) for r in got] == [tuple(D(x) for x in row) for row in rows]
        assert [r[4:6] for r in got] == [(D("131.00"), D("13.10")), second]
        assert {r[8] for r in got} == {dt.date(2024, 2, 11)}
        paid = store.query(
            "SELECT 100.00 + sum(amount_ex_gst), 10.00 + sum(gst) FROM bill_lines"
            " WHERE component LIKE 'Adjustment%'"
        ).fetchall()[0]
        assert paid == charge
        assert store.query("SELECT * FROM audit_bill_line_sums").fetchall() == []
    finally:
        store.close()


def test_explain_reproduces_a_bill_with_adjustment_lines(july_august: Path) -> None:
    """August's bills carry July's adjustments (credit, rebill, write-off). ``explain bill``
    recomputes the usage lines from intervals and checks the adjustment lines against the
    adjustments applied to the bill: it reproduces each. It said DIFFERS for every bill with
    an adjustment line (those were compared with the recomputed usage lines, which have none).
    A missing adjustment line is a difference."""
    from settlement.billing_explain import _adjustments_match, explain_bill

    with Store.open(july_august / "store.duckdb", read_only=True) as store:
        ids = [
            r[0]
            for r in store.query(
                "SELECT DISTINCT b.bill_id FROM bills b JOIN bill_lines l USING (bill_id)"
                " WHERE b.status = 'issued' AND l.component LIKE 'Adjustment%' ORDER BY 1"
            ).fetchall()
        ]
        assert len(ids) == 3
        for bill_id in ids:
            ex = explain_bill(store, bill_id)
            assert ex.reproduced is True, bill_id
            kinds = set(
                ex.lines.filter(pl.col("component").str.starts_with("Adjustment"))["component"]
            )
            assert kinds == {
                "Adjustment: credit",
                "Adjustment: rebill",
                "Adjustment: back-billing limit",
            }
            last = ex.lines.filter(pl.col("component") == "Adjustment: back-billing limit")
            assert not _adjustments_match(
                store, ex.bill, ex.lines.filter(pl.col("line_no") != last["line_no"][0])
            )
