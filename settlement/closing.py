"""Month-end (cycle-end) bill close for the nightly run: bill, adjust, issue.

1. Candidates: every non-shadow account cycle whose last day falls in the run's range, plus
   earlier cycles still held, unless already issued.
2. Bill them (``settlement.billing.bill_accounts``) under deterministic billing-run ids derived
   from the nightly run id, so a rerun after a crash rewrites exactly the same bills.
3. Revisions: an issued bill whose meter reads (or, for spot-linked products, prices) changed in
   files ingested after its issue is re-billed (status ``rebill``, never issued) and the
   difference becomes a pending adjustment linked by ``original_bill_id`` (always the issued
   bill, however many times it is revised). The issued bill itself is never touched.

   The rule, per issued bill B with issued amount I (ex GST and GST kept apart, decided on the
   total inc GST). C, the amount charged for B, is I plus credit + rebill + write-off of every
   earlier adjustment of B that is ``pending``, ``applied`` or ``*_written_off`` (pending ones
   count: they are on their way to the next bill; a held one was never charged). A revision
   computes the true amount T and the amount N that may be charged now, and stores a credit of
   -C, a rebill of T and a write-off of N - T, so the customer's charge becomes N. N is T
   unless B has days before the back-billing limit (``as_of_day``, the run's last day, minus
   ``back_billing_months``; NERR: 9 months): pro rata by days, each day of B carries 1/n of
   every amount, and on a day before the limit the charge may only fall (it takes the true
   amount when that is lower, inc GST, else keeps what it charged: an undercharge older than
   the limit is never recovered, an overcharge is always refunded); the days from the limit on
   take the true amount (:func:`_charge_by_days`, exact fractions rounded once to the cent).
   A bill's limit never moves back: the later of this run's and the latest one stored for it
   (an older range run again, or a longer ``back_billing_months``, recovers nothing written
   off). A write-off that is not zero makes the status ``pending_written_off`` and a third line. For
   a bill wholly before the limit this is the rule as it was: N = min(C, T), so with every
   revision past the limit C = min(I, T1, ..., Tn); for one wholly after it N = T. Hence N <= T,
   a refund is only ever of money charged, an amount written off is never recovered later
   (the same truth detected again changes nothing), and nothing is stored when N = C and
   either T = C or T is the truth B's latest adjustment stored (nothing new: after a write-off
   T stays above C, and a re-sent file must not add a zero-net triple each time; with the
   limit part-way, T = C can still owe a refund on the recent days, N < C, stored). The
   ``bill_adjustments`` row is the audit trail: credit = -C, rebill = T, write-off = N - T,
   and ``limit_date``. This run's own rows are left out of C, so a rerun after a crash computes
   the same rows (and inserts nothing new).
4. Attach: pending adjustments become lines of the account's next bill while it is still a
   draft (totals updated), so the run's audits see every line that will be issued. What a
   bill takes is priced against the limit of the run that attaches it: an adjustment may wait
   months for a bill (the next one held, a long cycle), and an undercharge recoverable when
   it was detected may be past the limit by then. So, before revisions are looked for (step
   3 then credits what the customer will have been charged), every pending adjustment that a
   draft of this run takes is priced again as step 3 prices a revision, against the later of
   its ``limit_date`` and this run's limit (:func:`_reprice_pending`): when that moves the
   limit into B's days, its write-off, status and ``limit_date`` change (its rebill, the
   truth, does not), and so do the credit and write-off of B's later pending adjustments (the
   credit is of what the ones before now charge). The limit only moves forward: a rerun, or a
   later run after a failed audit, prices them the same or further on.
   4b. Final adjustment bills: an account that has moved out, with every supply day billed
   (its move-out no later than the end of its last issued bill) and no bill in this close,
   has no later bill for its adjustments to go on. When it has one on its way (pending, or a
   revision of its bills found by this run), the close drafts it a bill of its own, kind
   ``final_adjustment``, before step 3 (:func:`_final_drafts`): the adjustments are then priced
   and attached to it as to any draft, its period becomes the span of the bills they correct
   (:func:`_final_spans`), and a draft left without a line (a rebill held) is dropped. With
   ``final_adjustment_bills`` off, such adjustments stay pending and every run reports them
   (:data:`STRANDED_SQL`).
5. Issue (:func:`issue_cycles`, called by the nightly only once every audit has passed): the
   drafts become ``issued``, their adjustments ``applied``, and a content hash is stored
   (audited every run: issued bills never change). A run whose audits fail issues nothing: its
   drafts stay drafts (the next run's drafts of the same cycles supersede them, and the next
   close supersedes its final adjustment drafts whatever it drafts) and its adjustments stay
   pending, to be attached again by the next run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from itertools import groupby
from pathlib import Path
from typing import Any

import polars as pl

from settlement.billing import bill_accounts, discard_attempt, load_products
from settlement.failpoints import failpoint
from settlement.store import Store
from tariffs.calculus import component_suffix
from tariffs.money import round_cents
from tariffs.product import Product

Progress = Callable[[str, int, int], None]
# Accounts billed per billing run (the unit a crash makes the rerun redo). Memory is bounded
# inside bill_accounts (the SQL fast path returns only aggregates; the polars path prices in
# batches), and each fast-path run reads the whole meter_values table once: 5,000 per run made
# the 100,000-account close read it 20 times.
ACCOUNT_BATCH = 100_000

CANDIDATES_SQL = """
WITH months AS (
    SELECT unnest(generate_series(date_trunc('month', $d1::DATE) - INTERVAL 4 MONTH,
                                  $d2::DATE::TIMESTAMP, INTERVAL 1 MONTH))::DATE AS m
), cycles AS (
    SELECT c.account, make_date(year(m), month(m), c.cycle_day) AS cycle_start,
           (make_date(year(m), month(m), c.cycle_day)
             + CASE WHEN c.billing_cycle = 'quarterly' THEN INTERVAL 3 MONTH
                    ELSE INTERVAL 1 MONTH END)::DATE AS cycle_end,
           c.move_in, c.move_out, c.timezone
    FROM customers c, months
    WHERE c.billing_cycle = 'monthly' OR (month(m) - 1) % 3 = 0
), late_months AS (
    -- the months before those (from the cycle holding the move-in or the store's first settled
    -- day, whichever is later) of the accounts without an issued or held bill before them: an
    -- account whose customer row arrived late. Billed accounts are not expanded (set-based,
    -- one anti-join of the customers against the bills)
    SELECT c.account, unnest(generate_series(
             date_trunc('month', greatest(c.move_in, f.first_day)) - INTERVAL 3 MONTH,
             date_trunc('month', $d1::DATE) - INTERVAL 5 MONTH, INTERVAL 1 MONTH))::DATE AS m
    FROM customers c, (SELECT min(settlement_date) AS first_day FROM settled_days) f
    WHERE greatest(c.move_in, f.first_day) < date_trunc('month', $d1::DATE) - INTERVAL 4 MONTH
      AND NOT EXISTS (SELECT 1 FROM bills b WHERE b.account = c.account AND NOT b.shadow
                      AND b.status IN ('issued', 'held') AND b.kind = 'cycle'
                      AND b.cycle_start < date_trunc('month', $d1::DATE) - INTERVAL 4 MONTH)
), late_cycles AS (
    SELECT * FROM cycles
    UNION ALL
    SELECT c.account, make_date(year(m), month(m), c.cycle_day) AS cycle_start,
           (make_date(year(m), month(m), c.cycle_day)
             + CASE WHEN c.billing_cycle = 'quarterly' THEN INTERVAL 3 MONTH
                    ELSE INTERVAL 1 MONTH END)::DATE AS cycle_end,
           c.move_in, c.move_out, c.timezone
    FROM customers c JOIN late_months l USING (account)
    WHERE c.billing_cycle = 'monthly' OR (month(m) - 1) % 3 = 0
), ending AS (
    -- cycles whose local end date is near the range (a cheap filter on dates first)
    SELECT * FROM cycles
    WHERE cycle_end - 1 BETWEEN $d1::DATE - 1 AND $d2
      AND cycle_end > move_in AND (move_out IS NULL OR cycle_start < move_out)
      -- a cycle whose local end date is the day before the range (west of market time, its
      -- last half-hour is in the range's first market day) only when that day was settled:
      -- on a store's first night the cycle before its data is not picked up
      AND (cycle_end - 1 >= $d1
           OR EXISTS (SELECT 1 FROM settled_days WHERE settlement_date = $d1::DATE - 1))
), local_ends AS (
    -- each (time zone, end date) in reach to its UTC instant once: built from the time zones
    -- and the range's dates, not from the cycles (a DISTINCT over these had the end-instant
    -- filter pushed below it, converting every cycle's end: 0.25 s for 100,000 accounts)
    SELECT z.timezone, d.cycle_end, timezone(z.timezone, d.cycle_end::TIMESTAMP) AS end_utc
    FROM (SELECT DISTINCT timezone FROM customers) z,
         (SELECT unnest(generate_series($d1::DATE, $d2::DATE + 1, INTERVAL 1 DAY))::DATE
            AS cycle_end) d
), due AS (
    -- a cycle closes in the run whose market days (UTC+10) reach the instant it ends, so every
    -- read of its last local day has arrived: a Sydney or Brisbane cycle on its last day, an
    -- Adelaide one (UTC+9:30, its last half-hour is in the next market day) the night after
    SELECT e.account, e.cycle_start FROM ending e JOIN local_ends l USING (timezone, cycle_end)
    WHERE l.end_utc > timezone('Etc/GMT-10', $d1::TIMESTAMP)
      AND l.end_utc <= timezone('Etc/GMT-10', ($d2::DATE + 1)::TIMESTAMP)
    UNION
    SELECT account, cycle_start FROM bills
    WHERE NOT shadow AND status = 'held' AND cycle_end - 1 <= $d2
    UNION
    -- a cycle that ended before the range but was never billed, within the store's settled
    -- days: an account whose customer row arrived late (its supply days re-settled, see
    -- settlement.wholesale.revised_days) is billed by the next close, not forgotten, however
    -- long before the range its cycles ended (late_months)
    SELECT c.account, c.cycle_start FROM late_cycles c
    WHERE c.cycle_end - 1 < $d1 AND c.cycle_end > c.move_in
      AND (c.move_out IS NULL OR c.cycle_start < c.move_out)
      AND c.cycle_start >= (SELECT min(settlement_date) FROM settled_days)
      AND NOT EXISTS (SELECT 1 FROM bills b WHERE b.account = c.account
                      AND b.cycle_start = c.cycle_start AND NOT b.shadow
                      AND b.status IN ('issued', 'held') AND b.kind = 'cycle')
)
SELECT DISTINCT d.account, d.cycle_start FROM due d
WHERE NOT EXISTS (SELECT 1 FROM bills b WHERE b.account = d.account
                  AND b.cycle_start = d.cycle_start AND NOT b.shadow AND b.status = 'issued'
                  AND b.kind = 'cycle')
ORDER BY d.cycle_start, d.account
"""

REVISED_SQL = """
WITH horizon AS (
    -- files at or below it cannot revise anything: checked by an earlier run, or older than
    -- every issued bill's inputs (no issued bill: nothing to revise, nothing scanned)
    SELECT greatest((SELECT coalesce(max(max_file_id), 0) FROM revision_checks),
                    (SELECT coalesce(min(input_max_file_id), 9223372036854775807)
                     FROM bill_issues)) AS f
),
new_reads AS (
    -- the day arrays (schema v10) of newer files, grouped on the stored numbers first, then
    -- named: a day row carries the newest file among its reads, so every new read is in a row
    -- of a newer file; its span is its market day's (NEM12 days are whole), a row per channel
    -- day where meter_values has a row per read (the text view meter_reads_raw made this 4.6 s
    -- for a 28.8 M-read night)
    SELECT c.nmi, v.file_id, min(v.lo) AS lo, max(v.hi) AS hi
    FROM (SELECT channel_id, file_id,
                 timezone('Etc/GMT-10', min(market_day)::TIMESTAMP) AS lo,
                 timezone('Etc/GMT-10', max(market_day)::TIMESTAMP)
                   + INTERVAL 1 DAY - to_minutes(min(interval_minutes)) AS hi
          FROM meter_days WHERE file_id > (SELECT f FROM horizon) GROUP BY ALL) v
    JOIN meter_channels c USING (channel_id)
    GROUP BY ALL
),
new_prices AS (
    SELECT region, file_id, min(interval_start) AS lo, max(interval_start) AS hi
    FROM price_reads_raw WHERE file_id > (SELECT f FROM horizon) GROUP BY ALL
),
touched AS (
    -- issued bills of an NMI or (spot products) a region with new data: only these get their
    -- local period converted to UTC (once per time zone and date, not per bill ever issued)
    SELECT b.bill_id, b.account, b.cycle_start, b.product, b.period_start, b.period_end, b.nmi,
           i.input_max_file_id, c.region, c.timezone
    FROM bills b JOIN bill_issues i USING (bill_id) JOIN customers c USING (account)
    WHERE b.status = 'issued' AND b.kind = 'cycle'  -- a final adjustment bill bills no reads
      AND (b.nmi IN (SELECT nmi FROM new_reads)
           OR (list_contains($spot::VARCHAR[], b.product)
               AND c.region IN (SELECT region FROM new_prices)))
),
local_days AS (
    SELECT timezone, d, timezone(timezone, d::TIMESTAMP) AS utc
    FROM (SELECT timezone, period_start AS d FROM touched
          UNION SELECT timezone, period_end FROM touched)
),
issued AS (
    SELECT t.*, f.utc AS utc_from, e.utc AS utc_to
    FROM touched t
    JOIN local_days f ON f.timezone = t.timezone AND f.d = t.period_start
    JOIN local_days e ON e.timezone = t.timezone AND e.d = t.period_end
)
SELECT DISTINCT b.bill_id, b.account, b.cycle_start, b.product, b.period_start
FROM issued b
WHERE EXISTS (SELECT 1 FROM new_reads r WHERE r.nmi = b.nmi AND r.file_id > b.input_max_file_id
              AND r.hi >= b.utc_from AND r.lo < b.utc_to)
   OR (list_contains($spot::VARCHAR[], b.product) AND EXISTS (
        SELECT 1 FROM new_prices p WHERE p.region = b.region AND p.file_id > b.input_max_file_id
        AND p.hi >= b.utc_from AND p.lo < b.utc_to))
ORDER BY b.cycle_start, b.account, b.product, b.period_start
"""

HASH_SQL = """
SELECT b.bill_id, sha256(concat_ws('|', b.account, b.period_start, b.period_end, b.product,
         b.product_version, b.total_ex_gst, b.gst, b.total_inc_gst,
         (SELECT string_agg(concat_ws(';', l.line_no, l.component, l.detail, l.quantity, l.unit,
                 l.rate, l.amount_ex_gst, l.gst, l.amount_inc_gst), '#' ORDER BY l.line_no)
          FROM bill_lines l WHERE l.bill_id = b.bill_id))) AS content_sha256
FROM bills b
WHERE {bills}
"""
"""A content hash per bill of those matching ``{bills}`` (a condition on ``bills b``, written
by this code): restrict it, as every caller does, or every bill in the store is hashed (0.3-0.4 s
per 100,000 bills)."""


@dataclass
class CloseResult:
    """What the bill stage did."""

    bills_issued: int = 0
    bills_held: int = 0
    holds: list[tuple[str, str, str]] = field(default_factory=list)
    adjustments: int = 0
    written_off: int = 0
    rebill_held: int = 0
    billing_runs: list[int] = field(default_factory=list)
    draft_runs: list[int] = field(default_factory=list)  # the runs whose drafts are to issue
    drafts: int = 0
    # pending adjustments no bill will take (original bill, account, status): see STRANDED_SQL
    stranded: list[tuple[str, str, str]] = field(default_factory=list)
    final_bills: int = 0  # final adjustment bills drafted (and issued, once the audits pass)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary of the bill stage (drafting; issuing is :meth:`issue_dict`)."""
        return {
            "drafts": self.drafts,
            "bills_held": self.bills_held,
            "holds": [list(h) for h in self.holds[:50]],
            "adjustments": self.adjustments,
            "adjustments_written_off_back_billing": self.written_off,
            "rebills_held": self.rebill_held,
            "billing_runs": self.billing_runs,
            "adjustments_without_target": [list(a) for a in self.stranded[:50]],
            "final_adjustment_bills": self.final_bills,
        }

    def issue_dict(self) -> dict[str, object]:
        """JSON-ready summary of the issue stage."""
        return {"bills_issued": self.bills_issued}


def billing_run_id(nightly_run_id: str, purpose: str, cycle_start: dt.date, batch: int) -> int:
    """A deterministic billing-run id (52 bits; the ad-hoc sequence stays far below it)."""
    blob = f"{nightly_run_id}|{purpose}|{cycle_start.isoformat()}|{batch}".encode()
    return (1 << 52) | int(hashlib.sha256(blob).hexdigest()[:12], 16)


def _bill_groups(
    store: Store,
    frame: pl.DataFrame,
    nightly_run_id: str,
    purpose: str,
    products: dict[str, Product],
    product_dir: Path,
    status: str,
    result: CloseResult,
) -> list[int]:
    """Bill (account, cycle_start) pairs grouped by cycle start, in account batches."""
    run_ids = []
    for (cycle_start,), group in frame.group_by("cycle_start", maintain_order=True):
        assert isinstance(cycle_start, dt.date)
        accounts = group.get_column("account").unique(maintain_order=True).to_list()
        for b in range(0, len(accounts), ACCOUNT_BATCH):
            rid = billing_run_id(nightly_run_id, purpose, cycle_start, b // ACCOUNT_BATCH)
            bill_accounts(
                store, cycle_start, cycle_start + dt.timedelta(days=1),
                accounts=accounts[b : b + ACCOUNT_BATCH], products=products,
                product_dir=product_dir, status=status, run_id=rid,
            )  # fmt: skip
            run_ids.append(rid)
            failpoint("bill.after_billing_run")
    result.billing_runs += run_ids
    return run_ids


def close_cycles(
    store: Store,
    nightly_run_id: str,
    date_from: dt.date,
    date_to: dt.date,
    product_dir: Path,
    back_billing_months: int,
    *,
    final_bills: bool = True,
) -> CloseResult:
    """Bill due cycles as drafts, turn revisions into adjustments and attach them to the
    drafts, with a final adjustment bill for a moved-out account's when ``final_bills``
    (module docstring, steps 1-4b). Nothing is issued: :func:`issue_cycles` does that once the
    run's audits pass."""
    result = CloseResult()
    products = load_products(product_dir)
    spot = [pid for pid, p in products.items() if p.needs_spot]
    revised = store.con.execute(REVISED_SQL, {"spot": spot}).pl()
    due = store.con.execute(CANDIDATES_SQL, {"d1": date_from, "d2": date_to}).pl()
    draft_runs = _bill_groups(
        store, due, nightly_run_id, "close", products, product_dir, "draft", result
    )
    final_run = final_run_id(nightly_run_id)
    _supersede_stopped_finals(store, final_run)
    if final_bills:
        accounts = revised.get_column("account").unique().sort().to_list()
        if _final_drafts(store, final_run, date_to, draft_runs, accounts):
            draft_runs.append(final_run)
            failpoint("bill.after_final_drafts")
    # pending adjustments these drafts take are priced at this run's limit before revisions are
    # looked for: a revision's credit is then of what the customer will have been charged
    _reprice_pending(store, draft_runs, _limit_day(date_to, back_billing_months))
    if revised.height:
        rebill_runs = _bill_groups(
            store, revised.select("account", "cycle_start").unique(maintain_order=True),
            nightly_run_id, "rebill", products, product_dir, "rebill", result,
        )  # fmt: skip
        _record_adjustments(store, nightly_run_id, revised, rebill_runs, date_to,
                            back_billing_months, result)  # fmt: skip
    _attach(store, draft_runs)
    if final_run in draft_runs:
        _final_spans(store, final_run)
    _stored_summary(store, nightly_run_id, result)
    return result


# The date a nightly run's one billing run of final adjustment bills is keyed on
# (:func:`billing_run_id`; the close and rebill runs are keyed on their cycle start).
FINAL_KEY = dt.date(1970, 1, 1)


def final_run_id(nightly_run_id: str) -> int:
    """The billing-run id of the nightly run's final adjustment bills (deterministic)."""
    return billing_run_id(nightly_run_id, "final", FINAL_KEY, 0)


# The accounts this close drafts a final adjustment bill for (module docstring, step 4b), with
# the NMI, product, version and currency of their last issued bill: moved out, every supply day
# billed, no bill drafted or held by the close's runs ($runs), and an adjustment on its way:
# one pending, or one of its issued bills among this run's revisions ($revised, recorded after).
def _no_later_bill(account: str, move_out: str) -> str:
    """SQL condition: no later bill will come for ``account`` (moved out at ``move_out``, both
    column expressions written by this module): no draft or held bill of it in the close's runs
    ($runs), and its move-out no later than the end of its last issued cycle bill. The rule
    :data:`FINAL_DUE_SQL` drafts a final adjustment bill by and :data:`STRANDED_SQL` reports by."""
    return f"""{move_out} IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM bills d WHERE d.account = {account}
                  AND list_contains($runs::BIGINT[], d.run_id) AND d.status IN ('draft', 'held'))
  AND {move_out} <= (SELECT max(b.period_end) FROM bills b WHERE b.account = {account}
                     AND NOT b.shadow AND b.status = 'issued' AND b.kind = 'cycle')"""


FINAL_DUE_SQL = f"""
WITH moved AS (
    -- the few accounts with an adjustment on its way that no later bill will take, first:
    -- the scan of the bills below then keeps only theirs (it does not grow with history)
    SELECT c.account FROM customers c
    WHERE (list_contains($revised::VARCHAR[], c.account)
           OR c.account IN (SELECT account FROM bill_adjustments
                            WHERE status IN ('pending', 'pending_written_off')))
      AND {_no_later_bill("c.account", "c.move_out")}
), last AS (
    SELECT b.account, arg_max(b.bill_id, b.period_end) AS bill_id
    FROM bills b SEMI JOIN moved m USING (account)
    WHERE NOT b.shadow AND b.status = 'issued' AND b.kind = 'cycle' GROUP BY b.account
)
SELECT l.account, b.nmi, b.product, b.product_version, b.currency
FROM last l JOIN bills b USING (bill_id)
ORDER BY l.account
"""


def _supersede_stopped_finals(store: Store, run_id: int) -> None:
    """Mark superseded the final adjustment drafts of other billing runs than ``run_id`` (this
    close's). A draft outlives its run only when a failed audit stopped the run; its
    adjustments stayed pending, so this close drafts the account again if it is still due, and
    otherwise (``final_adjustment_bills`` turned off, or nothing pending any more) the stopped
    draft would stay a draft for good. A cycle's stopped draft needs no such step: the cycle
    is due until it is issued, and its next draft supersedes it."""
    store.con.execute(
        "UPDATE bills SET status = 'superseded' WHERE kind = 'final_adjustment' "
        "AND status = 'draft' AND run_id <> ?",
        [run_id],
    )


def _final_drafts(
    store: Store, run_id: int, date_to: dt.date, runs: list[int], revised: list[str]
) -> bool:
    """Draft an empty final adjustment bill (billing run ``run_id``) for every account of
    :data:`FINAL_DUE_SQL`; True when there is one. An earlier attempt's drafts of the run are
    replaced (a rerun after a crash drafts the same bills); its issued ones stay.

    The header until :func:`_final_spans`: the run's last day as period and cycle (its cycle
    stays that day: the bill belongs to no billing cycle), the last issued bill's NMI, product,
    version and currency, totals zero (the attached lines add to them)."""
    with store.transaction() as con:
        due = con.execute(FINAL_DUE_SQL, {"runs": runs, "revised": revised}).fetchall()
        if not due:
            return False
        discard_attempt(con, run_id)
        con.execute(
            "INSERT INTO billing_runs (run_id, started_at, finished_at, data_as_of, period_start, "
            "period_end, shadow, status, bills, notes) VALUES (?, now(), now(), now(), ?, ?, "
            "false, 'done', ?, 'final adjustment bills of moved-out accounts')",
            [run_id, date_to, date_to + dt.timedelta(days=1), len(due)],
        )
        con.executemany(
            "INSERT INTO bills (bill_id, run_id, account, nmi, period_start, period_end, "
            "cycle_start, cycle_end, product, product_version, currency, total_ex_gst, gst, "
            "total_inc_gst, status, hold_reason, estimated_intervals, shadow, created_at, kind) "
            "VALUES (? || '/final-adjustment/' || ?::VARCHAR || '/r' || ?::VARCHAR, ?, ?, ?, ?, "
            "?, ?, ?, ?, ?, ?, 0, 0, 0, 'draft', NULL, 0, false, now(), 'final_adjustment')",
            [
                [account, date_to, run_id, run_id, account, nmi, date_to, date_to, date_to,
                 date_to, product, version, currency]
                for account, nmi, product, version, currency in due
            ],
        )  # fmt: skip
    return True


def _final_spans(store: Store, run_id: int) -> None:
    """Give each final adjustment draft of billing run ``run_id`` the span of the bills its
    lines correct as its period, and drop the drafts without a line (their revision's rebill
    was held, or changed nothing: no adjustment was stored), and the run when none is left.
    One transaction."""
    with store.transaction() as con:
        # the run's drafts' lines only (the whole bill_lines table grows with every run)
        drafts = "SELECT bill_id FROM bills WHERE run_id = $r AND status = 'draft'"
        con.execute(
            "UPDATE bills SET period_start = s.lo, period_end = s.hi FROM (SELECT bill_id, "
            "min(date_from) AS lo, max(date_to) + 1 AS hi FROM bill_lines "
            f"WHERE bill_id IN ({drafts}) GROUP BY ALL) s WHERE bills.bill_id = s.bill_id",
            {"r": run_id},
        )
        con.execute(
            f"DELETE FROM bills WHERE bill_id IN ({drafts}) AND bill_id NOT IN "
            f"(SELECT bill_id FROM bill_lines WHERE bill_id IN ({drafts}))",
            {"r": run_id},
        )
        con.execute(
            "DELETE FROM billing_runs WHERE run_id = $r AND NOT EXISTS (SELECT 1 FROM bills "
            "WHERE run_id = $r)",
            {"r": run_id},
        )
        con.execute(
            "UPDATE billing_runs SET bills = (SELECT count(*) FROM bills WHERE run_id = $r), "
            "period_start = coalesce((SELECT min(period_start) FROM bills WHERE run_id = $r), "
            "period_start), period_end = coalesce((SELECT max(period_end) FROM bills "
            "WHERE run_id = $r), period_end) WHERE run_id = $r",
            {"r": run_id},
        )


def _stored_summary(store: Store, nightly_run_id: str, result: CloseResult) -> None:
    """``result``'s billing runs, counts and holds read from what the nightly run stored, not
    from what this attempt did: a rerun after a crash past the issue step finds the cycles
    issued (nothing due) and the revisions checked (nothing detected), and must report what
    the run billed all the same (its manifest equals an uninterrupted run's).

    The run's billing runs are found by their deterministic ids (:func:`billing_run_id`, one per
    purpose, cycle start and batch) among the stored ones; its adjustments by
    ``detected_run_id``."""
    starts = [
        r[0]
        for r in store.con.execute(
            "SELECT DISTINCT cycle_start FROM bills WHERE NOT shadow ORDER BY 1"
        ).fetchall()
    ]
    n_accounts = store.con.execute("SELECT count(DISTINCT account) FROM customers").fetchall()
    batches = range(max(1, -(-int(n_accounts[0][0]) // ACCOUNT_BATCH)))
    ids = {
        purpose: [billing_run_id(nightly_run_id, purpose, c, b) for c in starts for b in batches]
        for purpose in ("close", "rebill")
    }
    final_run = final_run_id(nightly_run_id)
    ids["close"].append(final_run)  # the final adjustment bills are drafts to issue too
    stored = {
        purpose: [
            int(r[0])
            for r in store.con.execute(
                "SELECT run_id FROM billing_runs WHERE list_contains(?::BIGINT[], run_id) "
                "ORDER BY run_id",
                [candidates],
            ).fetchall()
        ]
        for purpose, candidates in ids.items()
    }
    result.draft_runs = stored["close"]
    result.billing_runs = sorted(stored["close"] + stored["rebill"])
    _count(store, result.draft_runs, result)
    held = store.con.execute(
        "SELECT bill_id, account, hold_reason FROM bills WHERE list_contains(?::BIGINT[], "
        "run_id) AND status = 'held' ORDER BY bill_id LIMIT 50",
        [result.draft_runs],
    ).fetchall()
    result.holds = [(str(a), str(b), str(c)) for a, b, c in held]
    row = store.con.execute(
        "SELECT count(*) FILTER (status <> 'held'), count(*) FILTER (status LIKE "
        "'%written_off'), count(*) FILTER (status = 'held') FROM bill_adjustments "
        "WHERE detected_run_id = ?",
        [nightly_run_id],
    ).fetchall()[0]
    result.adjustments, result.written_off, result.rebill_held = (int(n) for n in row)
    result.final_bills = int(
        store.con.execute(
            "SELECT count(*) FROM bills WHERE run_id = ? AND status IN ('draft', 'issued')",
            [final_run],
        ).fetchall()[0][0]
    )
    stranded = store.con.execute(STRANDED_SQL, {"runs": result.draft_runs}).fetchall()
    result.stranded = [(str(a), str(b), str(c)) for a, b, c in stranded]


# Pending adjustments with no bill to go on: the account has no draft or held bill in this run
# (no cycle of it due, none waiting, no final adjustment bill) and moved out no later than the
# end of its last issued bill (no cycle of it will come). With ``final_adjustment_bills`` on
# (the default) the close drafts them a final adjustment bill and none is left here; off, they
# stay pending (to settle outside the cycle) and every run reports them.
STRANDED_SQL = f"""
SELECT a.original_bill_id, a.account, a.status
FROM bill_adjustments a JOIN customers c USING (account)
WHERE a.status IN ('pending', 'pending_written_off') AND {_no_later_bill("a.account", "c.move_out")}
ORDER BY a.account, a.original_bill_id, a.detected_file_id, a.detected_run_id
"""


def _count(store: Store, runs: list[int], result: CloseResult) -> None:
    """The drafts (issued since or not), issued and held bills of ``runs`` into ``result``."""
    row = store.con.execute(
        "SELECT count(*) FILTER (status IN ('draft', 'issued')), "
        "count(*) FILTER (status = 'issued'), "
        "count(*) FILTER (status = 'held') FROM bills WHERE list_contains(?::BIGINT[], run_id)",
        [runs],
    ).fetchall()[0]
    result.drafts, result.bills_issued, result.bills_held = (int(n) for n in row)


def issue_cycles(store: Store, nightly_run_id: str, result: CloseResult) -> None:
    """Issue the drafts :func:`close_cycles` made (module docstring, step 5): call it only
    when the run's audits have passed."""
    _issue(store, nightly_run_id, result.draft_runs, result)


# The statuses of adjustments whose lines are (or will be) on a bill: what they charged counts.
CHARGED = "('pending', 'applied', 'pending_written_off', 'applied_written_off')"

ADJUST_SQL = f"""
WITH charged AS (
    -- what earlier adjustments of each revised bill charged (or will, once attached): credit +
    -- rebill + write-off of every one on a bill or on its way there (a fully written-off one
    -- nets to zero; a held one was never charged), and whether one was limited part-way
    -- through the period (the charge per day is then no longer even: see _charge_by_days).
    -- This run's own rows are left out (a rerun recomputes them).
    SELECT a.original_bill_id,
           sum(a.credit_ex_gst + a.rebill_ex_gst + a.writeoff_ex_gst) AS ex,
           sum(a.credit_gst + a.rebill_gst + a.writeoff_gst) AS tax,
           bool_or(a.limit_date > b.period_start AND a.limit_date < b.period_end) AS part_limited,
           max(a.limit_date) AS last_limit
    FROM bill_adjustments a JOIN bills b ON b.bill_id = a.original_bill_id
    WHERE a.status IN {CHARGED} AND a.detected_run_id <> $run
      AND a.original_bill_id IN (SELECT bill_id FROM _revised)
    GROUP BY ALL
), latest AS (
    -- the true amount the latest of them stored (detection order): the same truth detected
    -- again, with the charge unmoved, is nothing new
    SELECT original_bill_id, rebill_ex_gst AS last_rebill_ex_gst, rebill_gst AS last_rebill_gst
    FROM bill_adjustments
    WHERE status IN {CHARGED} AND detected_run_id <> $run
      AND original_bill_id IN (SELECT bill_id FROM _revised)
    QUALIFY row_number() OVER (PARTITION BY original_bill_id
                               ORDER BY detected_file_id DESC, detected_run_id DESC) = 1
), orig AS (
    -- the amount in force: the issued bill plus what its adjustments charged (module docstring)
    SELECT r.bill_id AS original_bill_id, b.account, b.cycle_start, b.product, b.period_start,
           b.period_end, b.total_ex_gst + coalesce(a.ex, 0) AS total_ex_gst,
           b.gst + coalesce(a.tax, 0) AS gst, b.total_ex_gst AS issued_ex_gst,
           b.gst AS issued_gst, coalesce(a.part_limited, false) AS part_limited, a.last_limit,
           l.last_rebill_ex_gst, l.last_rebill_gst
    FROM _revised r JOIN bills b USING (bill_id)
    LEFT JOIN charged a ON a.original_bill_id = r.bill_id
    LEFT JOIN latest l ON l.original_bill_id = r.bill_id
), new AS (
    SELECT bill_id AS rebill_bill_id, account, cycle_start, product, period_start, status,
           hold_reason, total_ex_gst, gst
    FROM bills WHERE list_contains($runs::BIGINT[], run_id)
)
SELECT o.original_bill_id, o.account, n.rebill_bill_id,
       -o.total_ex_gst AS credit_ex_gst, -o.gst AS credit_gst,
       n.total_ex_gst AS rebill_ex_gst, n.gst AS rebill_gst,
       o.period_start, o.period_end, n.status AS rebill_status, n.hold_reason,
       o.issued_ex_gst, o.issued_gst, o.part_limited, o.last_limit, o.last_rebill_ex_gst,
       o.last_rebill_gst
FROM orig o LEFT JOIN new n USING (account, cycle_start, product, period_start)
ORDER BY o.account, o.period_start, o.product
"""

# The limit a stored adjustment ``a`` of bill ``b`` was priced against; a row without one
# (written before schema v7 kept it): as its status decided it.
ROW_LIMIT = (
    "coalesce(a.limit_date, CASE WHEN a.status LIKE '%written_off' THEN b.period_end "
    "ELSE b.period_start END)"
)

# Earlier charged adjustments of the bills priced day by day, in detection order.
HISTORY_SQL = f"""
SELECT a.original_bill_id, a.rebill_ex_gst, a.rebill_gst, {ROW_LIMIT}
FROM bill_adjustments a JOIN bills b ON b.bill_id = a.original_bill_id
WHERE a.status IN {CHARGED} AND a.detected_run_id <> $run
  AND list_contains($bills::VARCHAR[], a.original_bill_id)
ORDER BY a.original_bill_id, a.detected_file_id, a.detected_run_id
"""


def _limit_day(as_of_day: dt.date, back_billing_months: int) -> dt.date:
    """The back-billing limit of a run whose last day is ``as_of_day``: ``back_billing_months``
    calendar months earlier (the same day of the month, or the month's last day when it has no
    such day). A bill's days before it are past the limit (module docstring, step 3)."""
    limit = pl.select(pl.lit(as_of_day).dt.offset_by(f"-{back_billing_months}mo")).item()
    assert isinstance(limit, dt.date)
    return limit


def _charge_by_days(
    days: int,
    issued: tuple[Decimal, Decimal],
    revisions: list[tuple[Decimal, Decimal, int]],
) -> tuple[Decimal, Decimal]:
    """What a bill of ``days`` days may charge after ``revisions`` (true amount ex GST, GST, and
    how many of its first days were past the back-billing limit then), in order.

    Each day carries 1/``days`` of an amount (pro rata by days). Day by day, a revision sets the
    charge to the true amount, except on a day past the limit, where the charge may only fall:
    it takes the true amount when that is lower (inc GST; an overcharge is always refunded) and
    otherwise stays (an undercharge older than the limit is never recovered). Exact fractions,
    rounded once to the cent, half away from zero (:func:`tariffs.money.round_cents`).
    """
    per_day = [(Fraction(issued[0]) / days, Fraction(issued[1]) / days)] * days
    for ex, tax, old in revisions:
        t = (Fraction(ex) / days, Fraction(tax) / days)
        per_day = [t if d >= old or t[0] + t[1] < c[0] + c[1] else c for d, c in enumerate(per_day)]
    return (
        round_cents(sum((c[0] for c in per_day), Fraction(0))),
        round_cents(sum((c[1] for c in per_day), Fraction(0))),
    )


def _record_adjustments(
    store: Store,
    nightly_run_id: str,
    revised: pl.DataFrame,
    rebill_runs: list[int],
    as_of_day: dt.date,
    back_billing_months: int,
    result: CloseResult,
) -> None:
    """Store one pending (or held / written-off) adjustment per revised issued bill.

    Credit -C (the amount charged so far), rebill T (the true amount), write-off N - T where N
    is what may be charged now (module docstring, step 3); ``pending_written_off`` when the
    write-off is not zero. A bill wholly past the back-billing limit, or wholly inside it, and
    never limited part-way before, is priced in one vectorised step (N = min(C, T) past it, T
    inside it, inc GST); the others day by day (:func:`_charge_by_days`).
    """
    store.con.register("_revised", revised.select("bill_id").to_arrow())
    try:
        adj = store.con.execute(ADJUST_SQL, {"runs": rebill_runs, "run": nightly_run_id}).pl()
    finally:
        store.con.unregister("_revised")
    limit = _limit_day(as_of_day, back_billing_months)
    # the limit never moves back for a bill: a run of an older range, or a longer
    # back_billing_months, must not recover an undercharge an earlier revision wrote off
    adj = adj.with_columns(
        pl.max_horizontal(pl.lit(limit), pl.col("last_limit")).alias("limit_date")
    )
    days = (pl.col("period_end") - pl.col("period_start")).dt.total_days()
    past = (pl.col("limit_date") - pl.col("period_start")).dt.total_days().clip(0, None)
    up = (
        pl.col("rebill_ex_gst")
        + pl.col("rebill_gst")
        + pl.col("credit_ex_gst")
        + pl.col("credit_gst")
        > 0
    )
    adj = adj.with_columns(
        days.alias("days"),
        pl.min_horizontal(past, days).alias("old"),
        (pl.col("rebill_bill_id").is_null() | (pl.col("rebill_status") == "held")).alias("held"),
    ).with_columns(
        (
            ~pl.col("part_limited") & ((pl.col("old") == 0) | (pl.col("old") == pl.col("days")))
        ).alias("even"),
        # N on the even path: the charge stays C when past the limit and T > C, else T
        pl.when((pl.col("old") == pl.col("days")) & up)
        .then(-pl.col("credit_ex_gst"))
        .otherwise(pl.col("rebill_ex_gst"))
        .alias("charge_ex_gst"),
        pl.when((pl.col("old") == pl.col("days")) & up)
        .then(-pl.col("credit_gst"))
        .otherwise(pl.col("rebill_gst"))
        .alias("charge_gst"),
    )
    by_days = adj.filter(~pl.col("even") & ~pl.col("held"))
    if by_days.height:
        adj = _by_days(store, nightly_run_id, adj, by_days)
    adj = adj.with_columns(
        (pl.col("charge_ex_gst") - pl.col("rebill_ex_gst")).alias("writeoff_ex_gst"),
        (pl.col("charge_gst") - pl.col("rebill_gst")).alias("writeoff_gst"),
    ).with_columns(
        pl.when(pl.col("held"))
        .then(pl.lit("held"))
        .when((pl.col("writeoff_ex_gst") != 0) | (pl.col("writeoff_gst") != 0))
        .then(pl.lit("pending_written_off"))
        .otherwise(pl.lit("pending"))
        .alias("status"),
        pl.lit(nightly_run_id).alias("detected_run_id"),
    )
    # nothing to store when the charge does not move (N = C) and neither does the truth: T = C,
    # or T is the truth the bill's latest adjustment stored (after a write-off T stays above C
    # for good, and the same truth detected again, by a re-sent file or another channel's
    # re-read, would add a zero-net credit / rebill / write-off each time). A bill priced day
    # by day can owe a refund with T = C (its recent days were charged above T): N <> C, kept.
    same = (pl.col("charge_ex_gst") == -pl.col("credit_ex_gst")) & (
        pl.col("charge_gst") == -pl.col("credit_gst")
    )
    known = (
        (pl.col("rebill_ex_gst") == -pl.col("credit_ex_gst"))
        & (pl.col("rebill_gst") == -pl.col("credit_gst"))
    ) | (
        (pl.col("rebill_ex_gst") == pl.col("last_rebill_ex_gst"))
        & (pl.col("rebill_gst") == pl.col("last_rebill_gst"))
    ).fill_null(False)
    adj = adj.filter((pl.col("status") == "held") | ~(same & known))
    store.con.register("_adj", adj.to_arrow())
    try:
        store.con.execute(
            "INSERT INTO bill_adjustments (original_bill_id, rebill_bill_id, account, "
            "detected_run_id, detected_file_id, credit_ex_gst, credit_gst, rebill_ex_gst, "
            "rebill_gst, status, hold_reason, applied_to_bill_id, writeoff_ex_gst, writeoff_gst, "
            "limit_date) SELECT original_bill_id, rebill_bill_id, account, detected_run_id, "
            "(SELECT coalesce(max(file_id), 0) FROM ingested_files), credit_ex_gst, credit_gst, "
            "coalesce(rebill_ex_gst, 0), coalesce(rebill_gst, 0), status, "
            "coalesce(hold_reason, ''), NULL, CASE WHEN held THEN 0 ELSE writeoff_ex_gst END, "
            "CASE WHEN held THEN 0 ELSE writeoff_gst END, limit_date FROM _adj "
            "ON CONFLICT DO NOTHING"
        )
    finally:
        store.con.unregister("_adj")
    result.adjustments += adj.filter(pl.col("status") != "held").height
    result.written_off += adj.filter(pl.col("status") == "pending_written_off").height
    result.rebill_held += adj.filter(pl.col("status") == "held").height


def _by_days(
    store: Store, nightly_run_id: str, adj: pl.DataFrame, rows: pl.DataFrame
) -> pl.DataFrame:
    """``adj`` with ``charge_ex_gst``/``charge_gst`` of ``rows`` priced day by day from each
    bill's issued amount and its earlier charged revisions (a loop over these few bills only:
    a bill the limit cuts part-way, or one it has cut before)."""
    history = store.con.execute(
        HISTORY_SQL, {"bills": rows["original_bill_id"].to_list(), "run": nightly_run_id}
    ).fetchall()
    earlier: dict[str, list[tuple[Decimal, Decimal, dt.date]]] = {}
    for bill_id, ex, tax, limit_date in history:
        earlier.setdefault(bill_id, []).append((ex, tax, limit_date))
    charged = []
    for r in rows.iter_rows(named=True):
        start, n = r["period_start"], int(r["days"])
        steps = [
            (ex, tax, min(max((lim - start).days, 0), n))
            for ex, tax, lim in earlier.get(r["original_bill_id"], [])
        ]
        steps.append((r["rebill_ex_gst"], r["rebill_gst"], int(r["old"])))
        ex, tax = _charge_by_days(n, (r["issued_ex_gst"], r["issued_gst"]), steps)
        charged.append((r["original_bill_id"], ex, tax))
    priced = pl.DataFrame(
        charged,
        schema={"original_bill_id": pl.Utf8, "ex": adj["charge_ex_gst"].dtype,
                "tax": adj["charge_gst"].dtype},
        orient="row",
    )  # fmt: skip
    return (
        adj.join(priced, on="original_bill_id", how="left")
        .with_columns(
            pl.coalesce("ex", "charge_ex_gst").alias("charge_ex_gst"),
            pl.coalesce("tax", "charge_gst").alias("charge_gst"),
        )
        .drop("ex", "tax")
    )


# The draft each account's pending adjustments attach to (its first in ``$runs``): what _attach
# puts the lines on and what _issue marks the adjustments applied to.
TARGET_SQL = """
SELECT account, min(bill_id) AS bill_id FROM bills
WHERE list_contains($runs::BIGINT[], run_id) AND status = 'draft' GROUP BY account
"""

# The charged adjustments, in detection order, of every bill with a pending adjustment that a
# draft in ``$runs`` takes (TARGET_SQL) and whose limit moves into the bill's days at ``$limit``
# (the attaching run's): the bills _reprice_pending prices again.
REPRICE_SQL = f"""
WITH moved AS (
    SELECT DISTINCT a.original_bill_id
    FROM bill_adjustments a JOIN ({TARGET_SQL}) t USING (account)
    JOIN bills b ON b.bill_id = a.original_bill_id
    WHERE a.status IN ('pending', 'pending_written_off')
      AND {ROW_LIMIT} < least($limit::DATE, b.period_end) AND $limit::DATE > b.period_start
)
SELECT a.original_bill_id, a.detected_run_id, a.status LIKE 'pending%' AS pending,
       b.period_start, b.period_end, b.total_ex_gst, b.gst, a.credit_ex_gst, a.credit_gst,
       a.rebill_ex_gst, a.rebill_gst, a.writeoff_ex_gst, a.writeoff_gst, {ROW_LIMIT}
FROM bill_adjustments a JOIN bills b ON b.bill_id = a.original_bill_id
WHERE a.status IN {CHARGED} AND a.original_bill_id IN (SELECT original_bill_id FROM moved)
ORDER BY a.original_bill_id, a.detected_file_id, a.detected_run_id
"""

# Every pending adjustment a draft in ``$runs`` takes is priced against the later of its own
# limit and the attaching run's (a row whose limit this moves into its bill's days has just been
# priced again by _reprice_pending; for the others nothing changes but the date).
ADVANCE_LIMIT_SQL = f"""
UPDATE bill_adjustments SET limit_date = m.limit_date
FROM (SELECT a.original_bill_id, a.detected_run_id,
             greatest({ROW_LIMIT}, $limit::DATE) AS limit_date
      FROM bill_adjustments a JOIN ({TARGET_SQL}) t USING (account)
      JOIN bills b ON b.bill_id = a.original_bill_id
      WHERE a.status IN ('pending', 'pending_written_off')) m
WHERE bill_adjustments.original_bill_id = m.original_bill_id
  AND bill_adjustments.detected_run_id = m.detected_run_id
  AND bill_adjustments.limit_date IS DISTINCT FROM m.limit_date
"""


def _reprice_pending(store: Store, runs: list[int], limit: dt.date) -> None:
    """Price every pending adjustment that a draft of ``runs`` takes against the back-billing
    limit ``limit`` of the attaching run, when that is later than the one it was priced
    against (module docstring, step 4): an undercharge recoverable when it was detected may be
    past the limit by the time a bill takes it. Credit, write-off, status and ``limit_date``
    change; the rebill (the truth) does not. One transaction; a rerun finds every limit moved
    and changes nothing."""
    with store.transaction() as con:
        rows = con.execute(REPRICE_SQL, {"runs": runs, "limit": limit}).fetchall()
        updates = []
        for _, bill_rows in groupby(rows, key=lambda r: r[0]):
            updates += _reprice_bill(list(bill_rows), limit)
        if updates:
            con.executemany(
                "UPDATE bill_adjustments SET credit_ex_gst = ?, credit_gst = ?, "
                "writeoff_ex_gst = ?, writeoff_gst = ?, status = ?, limit_date = ? "
                "WHERE original_bill_id = ? AND detected_run_id = ?",
                updates,
            )
        con.execute(ADVANCE_LIMIT_SQL, {"runs": runs, "limit": limit})


def _reprice_bill(rows: list[tuple[Any, ...]], limit: dt.date) -> list[tuple[Any, ...]]:
    """The new (credit, write-off, status, limit) of one bill's pending adjustments, from the
    first whose days past the limit grow at ``limit`` on (REPRICE_SQL's rows, detection order).

    Step by step as :func:`_record_adjustments` prices a revision: C is the issued amount plus
    the credit + rebill + write-off of the rows before (the earlier ones as stored, the repriced
    ones as repriced: C is then the charge N of the row before), and N comes from
    :func:`_charge_by_days` over the bill's revisions so far, each with its days past its limit.
    """
    start, end, issued = rows[0][3], rows[0][4], (rows[0][5], rows[0][6])
    days = (end - start).days
    charged, steps, moved = issued, [], False
    out = []
    for bill_id, run_id, pending, *_, credit_ex, credit_gst, ex, tax, wo_ex, wo_gst, lim in rows:
        new_lim = max(lim, limit) if pending else lim
        old = min(max((new_lim - start).days, 0), days)
        moved = moved or old != min(max((lim - start).days, 0), days)
        steps.append((ex, tax, old))
        if not (moved and pending):  # as stored: before the first moved row, or applied
            charged = (charged[0] + credit_ex + ex + wo_ex, charged[1] + credit_gst + tax + wo_gst)
            continue
        n_ex, n_gst = _charge_by_days(days, issued, steps)
        status = "pending" if (n_ex, n_gst) == (ex, tax) else "pending_written_off"
        out.append(
            (-charged[0], -charged[1], n_ex - ex, n_gst - tax, status, new_lim, bill_id, run_id)
        )
        charged = (n_ex, n_gst)
    return out


ATTACH_SQL = f"""
WITH target AS ({TARGET_SQL}), pend AS (
    SELECT a.*, t.bill_id AS target_bill_id,
           -- one bill's adjustments in detection order; (original_bill_id, detected_run_id) is
           -- the key, so the line order is the same on every run (byte-identical snapshots)
           row_number() OVER (PARTITION BY a.account
                              ORDER BY a.original_bill_id, a.detected_file_id, a.detected_run_id)
             AS k
    FROM bill_adjustments a JOIN target t USING (account)
    WHERE a.status IN ('pending', 'pending_written_off')
), base AS (
    SELECT bill_id, max(line_no) AS n FROM bill_lines
    WHERE bill_id IN (SELECT target_bill_id FROM pend) GROUP BY ALL
), lines AS (
    SELECT p.target_bill_id, p.k, 1 AS j, 'Adjustment: credit' AS component,
           'credit of the amount charged so far for issued bill ' || p.original_bill_id
             AS detail,
           p.credit_ex_gst AS ex, p.credit_gst AS tax, p.original_bill_id
    FROM pend p
    UNION ALL
    SELECT p.target_bill_id, p.k, 2, 'Adjustment: rebill',
           'rebill of ' || p.original_bill_id || ' with revised data (' || p.rebill_bill_id || ')',
           p.rebill_ex_gst, p.rebill_gst, p.original_bill_id
    FROM pend p
    UNION ALL
    SELECT p.target_bill_id, p.k, 3, 'Adjustment: back-billing limit',
           'undercharge on ' || p.original_bill_id || ' for days before the back-billing limit'
             || coalesce(' (' || p.limit_date || ')', '') || ', not recovered',
           p.writeoff_ex_gst, p.writeoff_gst, p.original_bill_id
    FROM pend p WHERE p.status = 'pending_written_off'
)
SELECT l.target_bill_id AS bill_id,
       coalesce(b.n, 0) + row_number() OVER (PARTITION BY l.target_bill_id ORDER BY l.k, l.j)
         AS line_no,
       l.component, l.detail, 1.0 AS quantity, 'bill' AS unit, NULL::DOUBLE AS rate,
       l.ex AS amount_ex_gst, l.tax AS gst, l.ex + l.tax AS amount_inc_gst, l.tax <> 0 AS taxable,
       o.period_start AS date_from, o.period_end - 1 AS date_to, 0 AS n_intervals,
       'linked to issued bill ' || l.original_bill_id
         || ' (issued bills never change; corrections are lines on '
         || CASE WHEN t.kind = 'final_adjustment'
                 THEN 'the final adjustment bill of an account that has moved out)'
                 ELSE 'the next bill)' END AS explanation,
       l.original_bill_id
FROM lines l LEFT JOIN base b ON b.bill_id = l.target_bill_id
JOIN bills o ON o.bill_id = l.original_bill_id
JOIN bills t ON t.bill_id = l.target_bill_id
"""


def _attach(store: Store, runs: list[int]) -> None:
    """Attach every pending adjustment as lines of its account's draft in ``runs`` and update
    the draft's totals (one transaction), as stored: :func:`_reprice_pending` has priced them
    at this run's limit. The adjustments stay pending until :func:`_issue`; a rerun of the same
    billing runs rewrites the drafts and attaches them again."""
    with store.transaction() as con:
        lines = con.execute(ATTACH_SQL, {"runs": runs}).pl()
        if lines.height:
            con.register("_al", lines.to_arrow())
            con.execute(
                "INSERT INTO bill_lines SELECT bill_id, line_no, component, detail, quantity, "
                "unit, rate, amount_ex_gst, gst, amount_inc_gst, taxable, date_from, date_to, "
                "n_intervals, explanation FROM _al"
            )
            con.execute(
                "UPDATE bills SET total_ex_gst = total_ex_gst + d.ex, gst = bills.gst + d.tax, "
                "total_inc_gst = total_inc_gst + d.ex + d.tax FROM (SELECT bill_id, "
                "sum(amount_ex_gst) AS ex, sum(gst) AS tax FROM _al GROUP BY ALL) d "
                "WHERE bills.bill_id = d.bill_id"
            )
            con.unregister("_al")


def _issue(store: Store, nightly_run_id: str, runs: list[int], result: CloseResult) -> None:
    """Mark the drafts of ``runs`` issued, the adjustments attached to them applied, and store
    content hashes (one transaction)."""
    with store.transaction() as con:
        # the adjustments _attach put on these drafts: every pending one of an account with a
        # draft here, on the account's first draft (TARGET_SQL)
        con.execute(
            "UPDATE bill_adjustments SET applied_to_bill_id = t.bill_id, status = CASE "
            "WHEN status = 'pending_written_off' THEN 'applied_written_off' ELSE 'applied' END "
            f"FROM ({TARGET_SQL}) t WHERE bill_adjustments.account = t.account "
            "AND bill_adjustments.status IN ('pending', 'pending_written_off')",
            {"runs": runs},
        )
        failpoint("bill.before_issue_commit")
        con.execute(
            "UPDATE bills SET status = 'issued' WHERE list_contains(?::BIGINT[], run_id) "
            "AND status = 'draft'",
            [runs],
        )
        con.execute(
            "INSERT INTO bill_issues SELECT h.bill_id, $nid, (SELECT coalesce(max(file_id), 0) "
            "FROM ingested_files), h.content_sha256 FROM ("
            + HASH_SQL.replace(
                "{bills}",
                "list_contains($runs::BIGINT[], b.run_id) AND b.status = 'issued'"
                # issued by an earlier attempt of these billing runs: recorded then, kept
                " AND b.bill_id NOT IN (SELECT bill_id FROM bill_issues)",
            )
            + ") h",
            {"nid": nightly_run_id, "runs": runs},
        )
        con.execute(
            "INSERT OR REPLACE INTO revision_checks SELECT ?, coalesce(max(file_id), 0) "
            "FROM ingested_files",
            [nightly_run_id],
        )
    _count(store, runs, result)


def component_channels(products: dict[str, Product]) -> pl.DataFrame:
    """(product, component, suffix) of every kWh-priced component: what the energy audit checks."""
    rows = [
        (pid, comp.name, suffix)
        for pid, product in products.items()
        for comp in product.components
        if (suffix := component_suffix(comp)) is not None
    ]
    return pl.DataFrame(rows, schema=["product", "component", "suffix"], orient="row")


def stage_channels(store: Store, product_dir: Path) -> None:
    """Load :func:`component_channels` into the connection's temp table ``product_channels``."""
    frame = component_channels(load_products(product_dir))
    store.con.register("_pc", frame.to_arrow())
    try:
        store.con.execute("CREATE OR REPLACE TEMP TABLE product_channels AS SELECT * FROM _pc")
    finally:
        store.con.unregister("_pc")
