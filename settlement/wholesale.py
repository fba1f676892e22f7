"""Daily wholesale settlement: the retailer's cost of every account interval.

Per settled read (view ``wholesale_reads``: one row per account, channel and interval):
``amount_aud = kwh x DLF x MLF x price_per_mwh / 1000`` (DOMAIN.md section 4): the wholesale
cost of an import channel (suffix E*), the spot value of an export channel (B*). The view
``wholesale_settlement`` pivots it per account interval (import/export kWh, cost, export value).
A settlement day is a NEM market day: intervals starting in ``[D 00:00, D+1 00:00)`` UTC+10.
What is stored (schema v11, ``settlement.schema_wholesale_days``) is each channel's settled
day as one row of ``wholesale_days`` (the kWh array of its ``meter_days`` row, with its quality
flags; from v14 a reference to that row, which the view resolves, see
``settlement.schema_wholesale_refs``), the account's loss factors in ``wholesale_terms`` and
the price of each (region, interval) of the day in ``wholesale_prices``; the views
``wholesale_values`` (a row per read) and ``wholesale_reads`` multiply them out.

The price of a meter interval is the time-weighted mean of the price intervals it covers (a
30-minute read under 5-minute prices takes the mean of six prices; a 5-minute read under a
30-minute price takes that price). An interval whose price is not fully covered is stored with a
NULL price, so its cost is NULL and its ``status`` is ``'missing_price'``: a missing price never
counts as zero. Where prices of two interval lengths cover the same time (30-minute trading and
5-minute dispatch prices before 2021-10-01), the longer one is used: it is the price that was
settled.
"""

from __future__ import annotations

import datetime as dt

from settlement.accruals import accrue_day
from settlement.failpoints import failpoint
from settlement.schema_days import n_reads_sql, slot_start_sql
from settlement.store import Store, market_day_no, with_literals
from tariffs.product import Product

MARKET_TZ = "Etc/GMT-10"  # NEM market time, UTC+10 all year (POSIX sign convention)


TERMS_SQL = """
INSERT INTO wholesale_terms
SELECT (SELECT coalesce(max(terms_id), 0) FROM wholesale_terms)
       + row_number() OVER (ORDER BY account, region, dlf, mlf), account, region, dlf, mlf
FROM (SELECT DISTINCT account, region, dlf, mlf FROM customers) c
WHERE NOT EXISTS (
    SELECT 1 FROM wholesale_terms t
    WHERE t.account = c.account AND t.region = c.region AND t.dlf = c.dlf AND t.mlf = c.mlf
)
"""

VALUES_SQL = """
-- one row per current day array (meter_days) of an energy channel (E* import, B* export) of
-- the settled market day in the account's supply period (move-in and move-out are market days):
-- a reference to the array (schema v14: file_id and source_line with the channel, length and
-- day), its flags and count; {kwh} is NULL (the view wholesale_days resolves it) or, for a key
-- that names more than one array of the day, the array itself
WITH acct AS (
    SELECT t.terms_id, ch.channel_id, a.move_in,
           coalesce(a.move_out, DATE '9999-12-31') AS move_out
    FROM customers a
    JOIN wholesale_terms t
      ON t.account = a.account AND t.region = a.region AND t.dlf = a.dlf AND t.mlf = a.mlf
    JOIN meter_channels ch ON ch.nmi = a.nmi AND (ch.suffix[1] = 'E' OR ch.suffix[1] = 'B')
)
SELECT $settlement_date AS settlement_date, a.terms_id, m.channel_id, m.interval_minutes,
       {kwh}, m.flag_id, m.flags, {n_reads_m}, m.file_id, m.source_line
FROM meter_days m
JOIN acct a ON a.channel_id = m.channel_id
WHERE m.is_current AND m.market_day = $settlement_date
  AND m.market_day >= a.move_in AND m.market_day < a.move_out
""".replace("{n_reads_m}", n_reads_sql("m"))

# keys (channel, length, file, line) that name more than one array of the settled day: NEM12 has
# one record per channel day, so only a day rebuilt from readings of several files can have
# them; their settled rows keep a copy of the array
SHARED_KEYS_SQL = """
SELECT channel_id, interval_minutes, file_id, source_line FROM meter_days
WHERE market_day = $settlement_date GROUP BY ALL HAVING count(*) > 1
"""
# a copy of the array where its key is shared, else NULL (a reference)
_KWH_SHARED = (
    "CASE WHEN (m.channel_id, m.interval_minutes, m.file_id, m.source_line) IN "
    "(SELECT (channel_id, interval_minutes, file_id, source_line) FROM _shared_keys) "
    "THEN m.kwh END"
)


INTERVALS_SQL = """
-- every interval of the day at each (region, interval length) settled: the rows that need a price
-- (the few pairs first, then their slots: expanding every array's slots first and then taking
-- the distinct ones made 28.8 M rows for a 100,000-account day, 1.6 s)
SELECT r.region,
       {start} AS interval_start,
       r.interval_minutes
FROM (SELECT DISTINCT t.region, d.interval_minutes
      FROM wholesale_days d JOIN wholesale_terms t ON t.terms_id = d.terms_id
      WHERE d.settlement_date = $settlement_date) r
CROSS JOIN LATERAL (SELECT unnest(range(1440 // r.interval_minutes)) AS i) s
""".replace("{start}", slot_start_sql("$settlement_date", "s.i", "r.interval_minutes"))

_COUNT_INPUTS = """
WITH px AS (
    SELECT region, interval_minutes, list(price_per_mwh ORDER BY interval_start) AS prices,
           count(*) FILTER (price_per_mwh IS NULL) AS n_missing
    FROM wholesale_prices WHERE settlement_date = $settlement_date GROUP BY ALL
), est AS (
    SELECT coalesce(list(flag_id), []) AS ids FROM meter_flags WHERE quality IN ('E', 'S', 'N')
), base AS (
    SELECT {kwh}, d.flags, d.flag_id, {n_reads_d} AS n_reads, p.prices, p.n_missing, e.ids
    FROM {days} d
    JOIN wholesale_terms t ON t.terms_id = d.terms_id
    JOIN px p ON p.region = t.region AND p.interval_minutes = d.interval_minutes
    CROSS JOIN est e
    WHERE d.settlement_date = $settlement_date
)
""".replace("{n_reads_d}", n_reads_sql("d"))

COUNTS_SQL = (
    _COUNT_INPUTS.replace("{kwh}", "NULL AS kwh").replace("{days}", "wholesale_day_rows")
    + """
-- the day's settled reads, those without a price, and those with a price on an E, S or N read,
-- per day array, against the day's price array of its region and interval length: an array
-- whose slots are all priced and share one flag is counted from its stored count (schema v13)
-- and flag, without reading it; the others (a missing price, a V day) are only counted here,
-- for DIRTY_COUNTS_SQL to count slot by slot when there are any
SELECT coalesce(sum(n_reads) FILTER (n_missing = 0 AND flags IS NULL), 0), 0,
       coalesce(sum(n_reads * list_contains(ids, flag_id)::INTEGER)
                FILTER (n_missing = 0 AND flags IS NULL), 0),
       count(*) FILTER (n_missing > 0 OR flags IS NOT NULL)
FROM base
"""
)

DIRTY_COUNTS_SQL = (
    _COUNT_INPUTS.replace("{kwh}", "d.kwh").replace("{days}", "wholesale_days")
    + """
-- the arrays with a missing price or a flag per slot, counted slot by slot (read through the
-- view wholesale_days, which resolves a settled row's array)
SELECT coalesce(sum(list_count(kwh)), 0),
       coalesce(sum(len(list_filter(range(1, len(kwh) + 1),
                                    i -> kwh[i] IS NOT NULL AND prices[i] IS NULL))), 0),
       coalesce(sum(len(list_filter(range(1, len(kwh) + 1),
                                    i -> kwh[i] IS NOT NULL AND prices[i] IS NOT NULL
                                         AND list_contains(ids, coalesce(flags[i], flag_id))))), 0)
FROM base WHERE n_missing > 0 OR flags IS NOT NULL
"""
)


PRICES_SQL = """
WITH px_by_length AS (
    -- time-weighted mean price over each (region, meter interval), per price interval length
    SELECT r.region, r.interval_start, r.interval_minutes, p.interval_minutes AS price_minutes,
           sum(p.price_per_mwh * o.overlap_s) / sum(o.overlap_s) AS price_per_mwh,
           sum(o.overlap_s) AS covered_s
    FROM _settle_intervals r
    JOIN prices p
      ON p.region = r.region
     AND p.interval_start < r.interval_start + to_minutes(r.interval_minutes)
     AND p.interval_start + to_minutes(p.interval_minutes) > r.interval_start
     AND p.interval_start >= $start - INTERVAL 1 DAY AND p.interval_start < $end
    CROSS JOIN LATERAL (
        SELECT least(epoch(p.interval_start) + 60 * p.interval_minutes,
                     epoch(r.interval_start) + 60 * r.interval_minutes)
               - greatest(epoch(p.interval_start), epoch(r.interval_start)) AS overlap_s
    ) o
    GROUP BY ALL
),
px AS (
    -- one price series per interval: a fully covering one, the longest interval first (before
    -- 5-minute settlement the 30-minute trading price is what was settled, not dispatch prices)
    SELECT * FROM px_by_length
    QUALIFY row_number() OVER (PARTITION BY region, interval_start, interval_minutes
                               ORDER BY covered_s = 60 * interval_minutes DESC,
                                        price_minutes DESC) = 1
)
SELECT $settlement_date, r.region, r.interval_start, r.interval_minutes,
       CASE WHEN px.covered_s = 60 * r.interval_minutes THEN px.price_per_mwh END
FROM _settle_intervals r
LEFT JOIN px USING (region, interval_start, interval_minutes)
ORDER BY r.region, r.interval_start, r.interval_minutes
"""


def market_day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """UTC start and end of NEM market day ``day`` (UTC+10, no daylight saving)."""
    aest = dt.timezone(dt.timedelta(hours=10))
    start = dt.datetime.combine(day, dt.time(0), tzinfo=aest)
    return start.astimezone(dt.UTC), (start + dt.timedelta(days=1)).astimezone(dt.UTC)


def settle_day(
    store: Store, day: dt.date, run_id: str, products: dict[str, Product] | None = None
) -> dict[str, int]:
    """Replace the wholesale settlement of market day ``day`` (one transaction) and, given the
    ``products``, the accruals of the accounts' product charges for it
    (:func:`settlement.accruals.accrue_day`, in the same transaction).

    Returns counts: rows, missing_price, estimated (a known price on an E, S or N read), and
    with products the accrual counts (accrued_pieces, accrual_lines, accrual_skipped).
    Rerunning gives identical rows.
    """
    start, end = market_day_bounds(day)
    # the day as a typed literal: DuckDB prunes row groups by literal bounds, not parameters
    lit = {"start": start, "end": end, "settlement_date": day}
    with store.transaction() as con:
        con.execute("DELETE FROM wholesale_day_rows WHERE settlement_date = ?", [day])
        con.execute("DELETE FROM wholesale_prices WHERE settlement_date = ?", [day])
        con.execute(TERMS_SQL)
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _shared_keys AS " + with_literals(SHARED_KEYS_SQL, lit)
        )
        shared = con.execute("SELECT count(*) FROM _shared_keys").fetchall()[0][0]
        kwh = _KWH_SHARED if shared else "NULL::DOUBLE[]"
        values = with_literals(VALUES_SQL.replace("{kwh}", kwh), lit)
        con.execute(f"INSERT INTO wholesale_day_rows {values}")
        con.execute("DROP TABLE _shared_keys")
        failpoint("settle.in_transaction")
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _settle_intervals AS {with_literals(INTERVALS_SQL, lit)}"
        )
        con.execute(f"INSERT INTO wholesale_prices {with_literals(PRICES_SQL, lit)}")
        con.execute(
            "INSERT OR REPLACE INTO settled_days SELECT ?, ?, coalesce(max(file_id), 0) "
            "FROM ingested_files",
            [day, run_id],
        )
        con.execute("DROP TABLE _settle_intervals")
        row = con.execute(with_literals(COUNTS_SQL, lit)).fetchall()[0]
        if row[3]:  # arrays to count slot by slot
            more = con.execute(with_literals(DIRTY_COUNTS_SQL, lit)).fetchall()[0]
            row = tuple(a + b for a, b in zip(row[:3], more, strict=True))
        counts = {"rows": int(row[0]), "missing_price": int(row[1]), "estimated": int(row[2])}
        if products is not None:
            accrued = accrue_day(store, day, products)
            failpoint("settle.after_accruals")
            counts |= {
                "accrued_pieces": accrued["pieces"],
                "accrual_lines": accrued["lines"],
                "accrual_skipped": accrued["skipped"],
            }
    return counts


REVISED_SQL = """
-- per market day (UTC+10, as a day number) that a file newer than $horizon holds meter reads or
-- prices for: the newest such file. Only those files' rows are read (file_id zone maps). Meter
-- reads from the day arrays (schema v10): a row carries the newest file among its reads, so a
-- day's newest file is the same as over meter_values, from one row per channel day (a date per
-- read of a 28.8 M-read night, from the text view meter_reads_raw, made this scan 7.6 s)
WITH touched AS (
    SELECT (market_day - DATE '1970-01-01')::BIGINT AS day_no, max(file_id) AS file_id
    FROM meter_days WHERE file_id > $horizon GROUP BY ALL
    UNION ALL
    SELECT {day_no} AS day_no, max(file_id) AS file_id
    FROM price_reads_raw WHERE file_id > $horizon GROUP BY ALL
), supply AS (
    -- customer versions of the accounts a newer customers file names, each with the version
    -- before it: a new account, or a changed NMI or supply dates, changes which reads the days
    -- of its supply (old and new) settle. Loss factors are not dated: a new DLF or MLF applies
    -- from the next day settled, it does not re-price history.
    SELECT account, file_id, nmi, move_in, move_out,
           lag(file_id) OVER w AS old_file, lag(nmi) OVER w AS old_nmi,
           lag(move_in) OVER w AS old_in, lag(move_out) OVER w AS old_out
    FROM customers_raw
    WHERE account IN (SELECT account FROM customers_raw WHERE file_id > $horizon)
    WINDOW w AS (PARTITION BY account ORDER BY file_id)
), moved AS (
    SELECT file_id, least(move_in, coalesce(old_in, move_in)) - 1 AS lo,
           CASE WHEN move_out IS NULL OR (old_file IS NOT NULL AND old_out IS NULL) THEN NULL
                ELSE greatest(move_out, coalesce(old_out, move_out)) + 1 END AS hi
    FROM supply
    WHERE file_id > $horizon AND (old_file IS NULL OR nmi IS DISTINCT FROM old_nmi
          OR move_in IS DISTINCT FROM old_in OR move_out IS DISTINCT FROM old_out)
)
SELECT DISTINCT s.settlement_date FROM settled_days s
JOIN touched t ON DATE '1970-01-01' + t.day_no::INTEGER = s.settlement_date
 AND t.file_id > s.input_max_file_id
UNION
-- supply days (market days, a day's margin either side for the sites' time zones)
SELECT s.settlement_date FROM settled_days s
JOIN moved m ON s.settlement_date >= m.lo AND (m.hi IS NULL OR s.settlement_date <= m.hi)
 AND m.file_id > s.input_max_file_id
ORDER BY 1
""".replace("{day_no}", market_day_no("interval_start"))


def revised_days(store: Store) -> list[dt.date]:
    """Settled market days whose meter reads, prices or supply (a customer file adding an
    account or changing its NMI or supply dates) changed after they were settled.

    Call it after ingesting and before settling; the caller re-settles every day returned, each
    in its own transaction (:func:`settle_day`), and may be killed between any two of them.

    A day's ``settled_days.input_max_file_id`` (F) says its settlement reflects every file up to
    F. So day d is revised exactly when a file with ``file_id`` > F(d) holds reads or prices of d,
    judged per day. No file at or below min(F) over all settled days can revise any day, so only
    the rows of newer files are read. The bound must be the minimum. It used to be the maximum, on
    the premise that files are only ever new once; but a run killed after re-settling one revised
    day has moved that day's F to the newest file, and its rerun then scanned past the file that
    revised the others, which stayed settled on the old reads for good
    (``tests/test_nightly_resettle.py``).

    The minimum alone would be an ancient bound: a day settled once and never revised keeps the F
    of the night it was settled, and the scan would read the whole history every night. So, in
    the same transaction as the check, every settled day that is *not* revised has its F raised
    to the newest file id: every file up to it has just been checked and none touches that day,
    so its settlement is what settling it now would give (meter reads, prices and the supply
    facts of customer files: a new account, NMI or supply dates re-settle the days they
    cover). The revised days keep their old F, so they stay below the bound until their own :func:`settle_day` transaction moves them: a pending set that needs no
    table of its own, written before any re-settlement and cleared one day at a time. After a
    completed run every settled day has that run's F and the next night reads only its new
    files; after a crash the bound is the oldest revised day still waiting. A store left behind
    by the maximum bound mends itself: the forgotten day's F is still below the file that revised
    it, so its next run (one longer scan, from that day's F) re-settles it. An uninterrupted run
    and a killed-and-rerun one end with the same ``settled_days`` rows.
    """
    with store.transaction() as con:
        horizon, newest = con.execute(
            "SELECT min(input_max_file_id), (SELECT coalesce(max(file_id), 0) FROM ingested_files)"
            " FROM settled_days"
        ).fetchall()[0]
        if horizon is None:  # nothing settled yet: nothing is revised, nothing scanned
            return []
        # the bound as a literal, like settle_day's day bounds (see with_literals): on the bench
        # store the scan then reads the night's 28.8 M rows of meter_values, not all 172.8 M
        sql = REVISED_SQL.replace("$horizon", str(int(horizon)))
        days = [r[0] for r in con.execute(sql).fetchall()]
        con.execute(
            "UPDATE settled_days SET input_max_file_id = ? "
            "WHERE input_max_file_id < ? AND NOT list_contains(?::DATE[], settlement_date)",
            [newest, newest, days],
        )
    return days
