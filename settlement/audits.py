"""Run audits: SQL queries that must return no rows (SQLMesh style).

Each audit is data (name, description, SQL with ``$date_from`` / ``$date_to`` parameters). A run
executes every audit whose tables exist, stores the count and a sample of failing rows in
``audit_results``, and fails with exit code 4 when any audit returns rows.

The nightly runs them before it issues anything: the bill audits cover the bills already issued
and the run's drafts that are to be issued (``{to_issue}`` in their SQL: the drafts of the
billing runs in the temp table ``audit_draft_runs``), so a failed audit stops the bills it
would have let out.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from settlement.closing import HASH_SQL
from settlement.meter_days import span_sums_sql
from settlement.schema_days import slot_start_sql
from settlement.schema_wholesale_refs import RESOLVE_AUDIT_SQL
from settlement.store import Store, table_exists, with_literals

# the bills issued so far that the audit hashes ({scope}: see :func:`issued_scope`; the
# drafts of the run are not issued yet)
ISSUED_HASH_SQL = HASH_SQL.replace(
    "{bills}", "b.bill_id IN (SELECT bill_id FROM bill_issues) AND {scope}"
)

ROTATION_NIGHTS = 28
"""The nightly re-hashes the issued bills of its own range and one slice in
``ROTATION_NIGHTS`` of all the others (by a hash of the bill id and the run's last day), so
every issued bill is checked at least once in any ``ROTATION_NIGHTS`` consecutive days and a
night's cost does not grow with the whole history (0.3-0.4 s per 100,000 bills hashed: a
year of monthly bills for 100,000 accounts would add 4-5 s to every night).
``fairshare audit --all-issued`` hashes them all."""


def issued_scope(date_to: dt.date, all_issued: bool) -> str:
    """SQL condition on ``bills b``: the issued bills the hash audit checks (see
    :data:`ROTATION_NIGHTS`); ``$date_from``/``$date_to`` are replaced with the range."""
    if all_issued:
        return "true"
    night = (date_to - dt.date(1970, 1, 1)).days % ROTATION_NIGHTS
    return (
        "(b.period_end - 1 BETWEEN $date_from - 1 AND $date_to"
        f" OR hash(b.bill_id) % {ROTATION_NIGHTS} = {night})"
    )


@dataclass(frozen=True)
class Audit:
    """A query that must return no rows over the run's date range."""

    name: str
    description: str
    sql: str
    needs: tuple[str, ...]


@dataclass
class AuditResult:
    """How one audit came out."""

    name: str
    description: str
    failing_rows: int
    sample: list[dict[str, object]]
    seconds: float = 0.0  # wall time of its queries (every range it covered)

    @property
    def passed(self) -> bool:
        """True when the audit returned no rows."""
        return self.failing_rows == 0


AUDITS: list[Audit] = [
    Audit(
        "wholesale_energy_conserved",
        "settled kWh per account, market day and channel equals the current metered kWh of the "
        "account's supply period",
        """
        -- per day array (schema v10/v11): one list_sum per channel-day on both sides. Supply
        -- periods are whole market days (move-in and move-out are market midnights)
        WITH acct AS (
            SELECT account, nmi, move_in, coalesce(move_out, DATE '9999-12-31') AS move_out
            FROM customers
        ), metered AS (
            SELECT a.account, m.channel_id, m.market_day AS day,
                   -- the sums stored at ingestion (schema v16), against the settled arrays
                   sum(m.kwh_sum) AS kwh
            FROM acct a JOIN meter_channels c ON c.nmi = a.nmi
             AND (c.suffix[1] = 'E' OR c.suffix[1] = 'B')
            JOIN meter_days m ON m.channel_id = c.channel_id AND m.is_current
             AND m.market_day >= a.move_in AND m.market_day < a.move_out
            WHERE m.market_day BETWEEN $date_from AND $date_to
            GROUP BY ALL
        ), settled_by_terms AS (
            SELECT terms_id, channel_id, settlement_date AS day,
                   sum(coalesce(list_sum(kwh), 0)) AS kwh
            FROM wholesale_days WHERE settlement_date BETWEEN $date_from AND $date_to
            GROUP BY ALL
        ), settled AS (
            SELECT t.account, s.channel_id, s.day, sum(s.kwh) AS kwh
            FROM settled_by_terms s JOIN wholesale_terms t USING (terms_id) GROUP BY ALL
        )
        SELECT account, day, c.suffix, s.kwh AS settled_kwh, m.kwh AS metered_kwh
        FROM settled s FULL JOIN metered m USING (account, channel_id, day)
        JOIN meter_channels c USING (channel_id)
        WHERE abs(coalesce(s.kwh, 0) - coalesce(m.kwh, 0)) > 1e-6
        """,
        ("wholesale_days",),
    ),
    Audit(
        "settled_days_resolve",
        "every settled channel day that refers to its meter array (schema v14) finds exactly "
        "one: the settlement reads the readings that were settled, no more and no fewer",
        RESOLVE_AUDIT_SQL,
        ("wholesale_day_rows",),
    ),
    Audit(
        "meter_no_overlapping_current_reads",
        "no two current reads of a channel overlap in time (a day re-sent at another interval "
        "length supersedes the old length's reads; the energy would otherwise count twice)",
        """
        WITH mixed AS (
            -- only channels with current reads of two lengths in the range can overlap (equal
            -- lengths on the same start are the duplicate audit's): found from the day rows
            -- (schema v10: a current row per channel, market day and length of its current
            -- reads), not by grouping the range's reads (0.3 s for a 28.8 M-read day)
            SELECT channel_id FROM meter_days
            WHERE is_current AND market_day BETWEEN $date_from AND $date_to
            GROUP BY channel_id HAVING min(interval_minutes) <> max(interval_minutes)
        ), span AS (
            -- those channels' reads only (the join's keys bound the scan)
            SELECT v.channel_id, v.interval_start, v.interval_minutes
            FROM meter_values v JOIN mixed m USING (channel_id)
            WHERE v.is_current
              AND v.interval_start >= timezone('Etc/GMT-10', $date_from::TIMESTAMP)
              AND v.interval_start < timezone('Etc/GMT-10', ($date_to + 1)::TIMESTAMP)
        ), ordered AS (
            SELECT s.*, max(s.interval_start + to_minutes(s.interval_minutes)) OVER (
                       PARTITION BY s.channel_id ORDER BY s.interval_start, s.interval_minutes
                       ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS earlier_end
            FROM span s
        )
        SELECT c.nmi, c.suffix, o.interval_start, o.interval_minutes, o.earlier_end
        FROM ordered o JOIN meter_channels c USING (channel_id)
        WHERE o.earlier_end > o.interval_start
        """,
        ("meter_values", "meter_days"),
    ),
    Audit(
        "wholesale_no_nan",
        "no NaN or infinite kWh, loss factor or price in the settlement (a NULL price is a "
        "missing price, stated as such)",
        """
        -- a read's kWh and a loss factor tested apart. Reads: a day array whose sum is not
        -- finite holds a NaN or an infinity (list_sum skips NULL slots), and only those arrays
        -- are unnested; loss factors: the (normally no) failing terms, then their reads
        WITH bad AS (
            SELECT d.* FROM wholesale_days d
            WHERE d.settlement_date BETWEEN $date_from AND $date_to
              AND NOT isfinite(coalesce(list_sum(d.kwh), 0))
            UNION ALL
            SELECT d.* FROM wholesale_days d
            JOIN (SELECT terms_id FROM wholesale_terms
                  WHERE isnan(dlf * mlf) OR isinf(dlf * mlf)) t USING (terms_id)
            WHERE d.settlement_date BETWEEN $date_from AND $date_to
              AND isfinite(coalesce(list_sum(d.kwh), 0))
        ), reads AS (
            SELECT terms_id, channel_id, settlement_date, interval_minutes,
                   unnest(kwh) AS kwh, generate_subscripts(kwh, 1) AS slot
            FROM bad
        )
        SELECT t.account, r.channel_id,
               {start_r} AS interval_start,
               r.kwh, NULL AS price_per_mwh
        FROM reads r JOIN wholesale_terms t USING (terms_id)
        WHERE r.kwh IS NOT NULL
          AND (isnan(r.kwh) OR isinf(r.kwh) OR isnan(t.dlf * t.mlf) OR isinf(t.dlf * t.mlf))
        UNION ALL
        SELECT region, NULL, interval_start, NULL, price_per_mwh FROM wholesale_prices
        WHERE settlement_date BETWEEN $date_from AND $date_to
          AND (isnan(price_per_mwh) OR isinf(price_per_mwh))
        """.replace(
            "{start_r}", slot_start_sql("r.settlement_date", "r.slot - 1", "r.interval_minutes")
        ),
        ("wholesale_days",),
    ),
    Audit(
        "wholesale_no_duplicate_interval",
        "one settled read per channel and interval (so none for two accounts at once), and one "
        "price per region and interval",
        """
        -- an array holds one read per slot, so a repeat needs two rows of one channel and day
        -- (two accounts settling one NMI, or two interval lengths): only those are unnested
        WITH doubled AS (
            SELECT d.* FROM wholesale_days d
            SEMI JOIN (SELECT channel_id, settlement_date FROM wholesale_days
                       WHERE settlement_date BETWEEN $date_from AND $date_to
                       GROUP BY ALL HAVING count(*) > 1) x USING (channel_id, settlement_date)
            WHERE d.settlement_date BETWEEN $date_from AND $date_to
        ), reads AS (
            SELECT channel_id, settlement_date, interval_minutes,
                   unnest(kwh) AS kwh, generate_subscripts(kwh, 1) AS slot
            FROM doubled
        )
        SELECT channel_id::VARCHAR AS channel_or_region,
               {start} AS interval_start,
               count(*) AS n
        FROM reads WHERE kwh IS NOT NULL
        GROUP BY ALL HAVING count(*) > 1
        UNION ALL
        SELECT region, interval_start, count(*) FROM wholesale_prices
        WHERE settlement_date BETWEEN $date_from AND $date_to
        GROUP BY region, interval_start, interval_minutes HAVING count(*) > 1
        """.replace("{start}", slot_start_sql("settlement_date", "slot - 1", "interval_minutes")),
        ("wholesale_days",),
    ),
    Audit(
        "accrued_energy_equals_metered",
        "the kWh each account's product charges accrued for a settled day, per channel the"
        " product prices (import, controlled load, export), equal the current metered kWh of"
        " the accrual's span",
        """
        WITH pieces AS MATERIALIZED (
            SELECT row_number() OVER () AS piece_no, a.*
            FROM accrual_days a WHERE a.settlement_date BETWEEN $date_from AND $date_to
        ), spans AS MATERIALIZED (
            SELECT p.piece_no, c.channel_id, c.suffix, p.utc_from, p.utc_to
            FROM pieces p JOIN meter_channels c ON c.nmi = p.nmi AND c.suffix IN ('E1', 'E2', 'B1')
        ), n_flags AS (
            SELECT coalesce(list(flag_id), []::SMALLINT[]) AS ids
            FROM meter_flags WHERE quality = 'N'
        ), span_n AS MATERIALIZED (
            SELECT s.*, n.ids AS n_ids FROM spans s CROSS JOIN n_flags n
        ), metered AS (
            -- a piece lies in its market day: the day's stored sum when the piece is the whole
            -- day (schema v16), else a slice of its current array
            {span_sums}
        ), accrued AS (
            SELECT piece_no, suffix, kwh FROM pieces
            CROSS JOIN LATERAL (VALUES ('E1', import_kwh), ('E2', controlled_kwh),
                                       ('B1', export_kwh)) v(suffix, kwh)
        )
        SELECT p.settlement_date, p.account, p.local_date, a.suffix, a.kwh AS accrued_kwh,
               m.kwh AS metered_kwh
        FROM accrued a JOIN pieces p USING (piece_no)
        LEFT JOIN metered m USING (piece_no, suffix)
        WHERE a.kwh IS NOT NULL AND abs(a.kwh - coalesce(m.kwh, 0)) > 1e-6
        """.replace("{span_sums}", span_sums_sql("span_n", "piece_no, suffix", "s.n_ids")),
        ("accrual_days",),
    ),
]


# A bill that is issued, or a draft of this run that is about to be (alias ``b``).
TO_ISSUE = (
    "(b.status = 'issued' OR (b.status = 'draft' AND b.run_id IN "
    "(SELECT run_id FROM audit_draft_runs)))"
)

BILL_AUDITS: list[Audit] = [
    Audit(
        "issued_bills_unchanged",
        "every issued bill (header and lines) hashes to what it hashed to when issued, and "
        "none is gone; the nightly hashes the bills of its range and a rotating slice of the "
        "others (all of them within 28 nights; fairshare audit --all-issued: all at once)",
        """
        SELECT i.bill_id, i.content_sha256 AS at_issue, h.content_sha256 AS now
        FROM bill_issues i LEFT JOIN (HASH) h USING (bill_id)
        WHERE CASE WHEN h.bill_id IS NOT NULL THEN h.content_sha256 <> i.content_sha256
                   ELSE NOT EXISTS (SELECT 1 FROM bills b WHERE b.bill_id = i.bill_id) END
        """,
        ("bill_issues",),
    ),
    Audit(
        "one_issued_bill_per_account_period",
        "no account has two issued cycle bills (counting the run's drafts to be issued) for "
        "the same period and product (a final adjustment bill corrects periods already billed)",
        """
        SELECT account, period_start, product, count(*) AS n FROM bills b
        WHERE {to_issue} AND b.kind = 'cycle' GROUP BY ALL HAVING count(*) > 1
        """,
        ("bill_issues",),
    ),
    Audit(
        "issued_bill_ids_and_lines_unique",
        "no issued bill id, and no line number of an issued bill, appears twice (the tables "
        "carry no key index since schema v5; a duplicate bill row doubles every line's count)",
        """
        SELECT b.bill_id, l.line_no, count(*) AS n FROM bills b JOIN bill_lines l USING (bill_id)
        WHERE {to_issue}
          AND (b.status = 'draft' OR b.period_end - 1 BETWEEN $date_from - 1 AND $date_to)
        GROUP BY ALL HAVING count(*) > 1
        """,
        ("bill_issues",),
    ),
    Audit(
        "issued_bills_have_amounts",
        "no NULL (or NaN) amount on an issued bill (or a draft to be issued) or its lines",
        """
        SELECT b.bill_id, l.line_no FROM bills b LEFT JOIN bill_lines l USING (bill_id)
        WHERE {to_issue} AND (b.total_ex_gst IS NULL OR b.gst IS NULL
              OR b.total_inc_gst IS NULL OR l.amount_inc_gst IS NULL OR isnan(l.quantity))
        """,
        ("bill_issues",),
    ),
    Audit(
        "issued_lines_sum_to_totals",
        "the lines of every issued bill (and draft to be issued) add up to its totals to the cent",
        """
        SELECT b.bill_id, b.total_ex_gst, sum(l.amount_ex_gst) AS lines_ex, b.gst,
               sum(l.gst) AS lines_gst
        FROM bills b JOIN bill_lines l USING (bill_id) WHERE {to_issue}
        GROUP BY b.bill_id, b.total_ex_gst, b.gst, b.total_inc_gst
        HAVING sum(l.amount_ex_gst) <> b.total_ex_gst OR sum(l.gst) <> b.gst
            OR b.total_inc_gst <> b.total_ex_gst + b.gst
        """,
        ("bill_issues",),
    ),
    Audit(
        "billed_energy_equals_metered",
        "each kWh component of a bill issued in the range (or a draft to be issued) bills "
        "exactly the metered energy of its channel over the bill's period, for bills issued "
        "from the data as known now (a "
        "file that arrived after a bill's issue is the revision process's to correct: a change "
        "worth a cent becomes an adjustment, a smaller one none)",
        """
        WITH billed_local AS MATERIALIZED (
            SELECT b.bill_id, b.nmi, l.component, pc.suffix, c.timezone, b.period_start,
                   b.period_end, sum(l.quantity) AS billed_kwh
            FROM bills b LEFT JOIN bill_issues i USING (bill_id)
            JOIN bill_lines l USING (bill_id)
            JOIN product_channels pc ON pc.product = b.product AND pc.component = l.component
            JOIN customers c ON c.account = b.account
            WHERE {to_issue} AND l.unit = 'kWh'
              -- every draft to issue, whenever it ended (a held bill released, a late cycle)
              AND (b.status = 'draft' OR b.period_end - 1 BETWEEN $date_from - 1 AND $date_to)
              -- a draft is made from the data as known now
              AND coalesce(i.input_max_file_id, (SELECT coalesce(max(file_id), 0)
                                                 FROM ingested_files))
                  = (SELECT coalesce(max(file_id), 0) FROM ingested_files)
            GROUP BY ALL
        ), local_days AS (
            -- local midnights to UTC once per time zone and date (per row: 0.6 s a 100,000 bills)
            SELECT timezone, d, timezone(timezone, d::TIMESTAMP) AS utc
            FROM (SELECT timezone, period_start AS d FROM billed_local
                  UNION SELECT timezone, period_end FROM billed_local)
        ), billed AS MATERIALIZED (
            SELECT bl.bill_id, bl.nmi, bl.component, bl.suffix, f.utc AS utc_from,
                   e.utc AS utc_to, bl.billed_kwh
            FROM billed_local bl
            JOIN local_days f ON f.timezone = bl.timezone AND f.d = bl.period_start
            JOIN local_days e ON e.timezone = bl.timezone AND e.d = bl.period_end
        ), spans AS MATERIALIZED (
            -- one numbered row per bill and channel (several components can bill one channel)
            SELECT row_number() OVER () AS span_no, *
            FROM (SELECT DISTINCT bl.bill_id, c.channel_id, bl.utc_from, bl.utc_to
                  FROM billed bl JOIN meter_channels c ON c.nmi = bl.nmi AND c.suffix = bl.suffix)
        ), n_flags AS (
            SELECT coalesce(list(flag_id), []::SMALLINT[]) AS ids
            FROM meter_flags WHERE quality = 'N'
        ), span_n AS MATERIALIZED (
            SELECT s.*, n.ids AS n_ids FROM spans s CROSS JOIN n_flags n
        ), metered AS (
            -- the current day rows (schema v10) of each span's market days: a whole day's stored
            -- sum (v16: the month's arrays are not read, 0.015 s against 1.0-1.1 s for 100,000
            -- accounts), a cut day's slice; summed per span number (grouping by the text bill id
            -- carried through the join made this audit 10.3 s)
            SELECT s.bill_id, s.channel_id, m.kwh AS metered_kwh
            FROM spans s JOIN ({span_sums}) m USING (span_no)
        )
        SELECT bl.bill_id, bl.component, bl.billed_kwh, m.metered_kwh
        FROM billed bl LEFT JOIN meter_channels c ON c.nmi = bl.nmi AND c.suffix = bl.suffix
        LEFT JOIN metered m ON m.bill_id = bl.bill_id AND m.channel_id = c.channel_id
        WHERE abs(bl.billed_kwh - coalesce(m.metered_kwh, 0)) > 1e-6
          AND NOT EXISTS (SELECT 1 FROM bill_adjustments a WHERE a.original_bill_id = bl.bill_id)
        """.replace("{span_sums}", span_sums_sql("span_n", "span_no", "s.n_ids")),
        ("bill_issues", "product_channels"),
    ),
]


def _finite(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """``rows`` with NaN and infinite floats as the strings ``"NaN"``, ``"Infinity"`` and
    ``"-Infinity"``: the samples go to ``audit_results`` and the snapshot as strict JSON, which
    has no such numbers (Python would write bare ``NaN``, which strict parsers refuse)."""
    names = {math.inf: "Infinity", -math.inf: "-Infinity"}
    return [
        {
            k: ("NaN" if math.isnan(v) else names[v])
            if isinstance(v, float) and not math.isfinite(v)
            else v
            for k, v in row.items()
        }
        for row in rows
    ]


def register(audit: Audit) -> None:
    """Add an audit (other modules register theirs at import time)."""
    if all(a.name != audit.name for a in AUDITS):
        AUDITS.append(audit)


def run_audits(
    store: Store,
    date_from: dt.date,
    date_to: dt.date,
    *,
    draft_runs: Sequence[int] = (),
    extra_days: Sequence[dt.date] = (),
    sample_rows: int = 5,
    all_issued: bool = False,
) -> list[AuditResult]:
    """Run every applicable audit over the date range; return results (also for passes).

    ``draft_runs``: billing runs whose drafts are about to be issued; the bill audits check
    them as if issued (module docstring). ``extra_days``: other market days the run wrote
    (the revised days it re-settled); the day audits (:data:`AUDITS`) also run over each
    stretch of consecutive such days outside the range, and an audit's result adds up its
    failing rows over all of them (its sample: the first rows found). ``all_issued``: hash
    every issued bill, not the range's and one rotating slice (:data:`ROTATION_NIGHTS`).
    """
    results = []
    store.con.execute(
        "CREATE OR REPLACE TEMP TABLE audit_draft_runs AS SELECT unnest(?::BIGINT[]) AS run_id",
        [[int(r) for r in draft_runs]],
    )
    for name, value in {"date_from": date_from, "date_to": date_to}.items():
        if isinstance(value, dt.datetime) or not isinstance(value, dt.date):
            raise TypeError(f"{name} must be a date, not {type(value).__name__}")
    ranges = [
        (date_from, date_to),
        *_stretches(d for d in extra_days if not date_from <= d <= date_to),
    ]
    for audit in [*AUDITS, *BILL_AUDITS]:
        if not all(table_exists(store.con, t) for t in audit.needs):
            continue
        sql = (
            audit.sql.replace("(HASH)", f"({ISSUED_HASH_SQL})")
            .replace("{scope}", issued_scope(date_to, all_issued))
            .replace("{to_issue}", TO_ISSUE)
        )
        found = 0
        sample: list[dict[str, object]] = []
        t0 = time.perf_counter()
        # the bill audits cover the bills of the run's range only
        for first, last in ranges if audit in AUDITS else ranges[:1]:
            # the range as DATE literals: the meter_values scans of the energy audits were not
            # pruned by a bound parameter (10.1 s against 6.4 s for a 28.8 M-read day)
            text = with_literals(sql, {"date_from": first, "date_to": last})
            rel = store.con.execute(f"SELECT * FROM ({text}) LIMIT 1000001")
            cols = [d[0] for d in rel.description or []]
            rows = rel.fetchall()
            found += len(rows)
            sample += [dict(zip(cols, r, strict=True)) for r in rows[: sample_rows - len(sample)]]
        sample = json.loads(json.dumps(_finite(sample), default=str, allow_nan=False))
        seconds = round(time.perf_counter() - t0, 3)
        results.append(AuditResult(audit.name, audit.description, found, sample, seconds))
    return results


def _stretches(days: Iterable[dt.date]) -> list[tuple[dt.date, dt.date]]:
    """Sorted distinct ``days`` as (first, last) stretches of consecutive days."""
    out: list[tuple[dt.date, dt.date]] = []
    for day in sorted(set(days)):
        if out and day == out[-1][1] + dt.timedelta(days=1):
            out[-1] = (out[-1][0], day)
        else:
            out.append((day, day))
    return out
