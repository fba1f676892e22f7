"""Schema v11: the wholesale settlement as day arrays, ``wholesale_days`` (slice 2 of
``docs/day-arrays.md``).

Until v10 a settled day was a copy of its reads, one ``wholesale_values`` row per read: 28.8
million rows for a 100,000-account day of 5-minute reads (2.1 s to append, 2.8 s to publish). From
v11 it is one row per account, channel and interval length, the settled kWh as the
``meter_days`` array of the channel's market day (slot ``i``: the interval starting ``i x
interval_minutes`` after 00:00 UTC+10; NULL: no read) with its flag, or a flag per slot:

    wholesale_days(settlement_date, terms_id, channel_id, interval_minutes, kwh DOUBLE[],
                   flag_id, flags SMALLINT[])

``wholesale_values`` becomes a view with the v6 columns (one row per read, NULL slots left
out), so ``wholesale_reads`` and ``wholesale_settlement`` and every query written against them
read the same rows as before. The migration moves the settled reads into arrays (a read off its
interval grid, which no NEM12 file can express, cannot have a slot and fails the migration).
"""

from __future__ import annotations

import duckdb

from settlement.schema_days import slot_start_sql

# one row per settled read of wholesale_days (the v6 columns), NULL slots left out
WHOLESALE_VALUES_VIEW = """
CREATE VIEW wholesale_values AS
SELECT terms_id, channel_id,
       {start} AS interval_start,
       interval_minutes, settlement_date, kwh, flag_id
FROM (
    SELECT terms_id, channel_id, interval_minutes, settlement_date,
           unnest(kwh) AS kwh,
           unnest(coalesce(flags, list_transform(kwh, x -> flag_id))) AS flag_id,
           generate_subscripts(kwh, 1) AS slot
    FROM wholesale_days
)
WHERE kwh IS NOT NULL
""".replace("{start}", slot_start_sql("settlement_date", "slot - 1", "interval_minutes"))

WHOLESALE_DAYS_V11_SQL = """
CREATE TABLE wholesale_days (
    settlement_date  DATE NOT NULL,             -- NEM market day (UTC+10)
    terms_id         INTEGER NOT NULL,          -- -> wholesale_terms (account, loss factors)
    channel_id       INTEGER NOT NULL,          -- E* import (cost), B* export (spot value)
    interval_minutes SMALLINT NOT NULL,
    kwh              DOUBLE[] NOT NULL,         -- slot i: i x interval_minutes after 00:00
                                                -- UTC+10; NULL = no read
    flag_id          SMALLINT NOT NULL,         -- the day's flag (its first read's if mixed)
    flags            SMALLINT[]                 -- a flag per slot when they differ, else NULL
);
"""

# one settled day of wholesale_values into arrays (a day at a time: the list aggregation holds
# its reads in memory)
MOVE_DAY_SQL = """
INSERT INTO wholesale_days
WITH r AS (
    SELECT settlement_date, terms_id, channel_id, interval_minutes, kwh, flag_id,
           ((epoch_us(interval_start) // 1000000 + 36000) % 86400) AS secs
    FROM wholesale_values WHERE settlement_date = $day
), g AS (
    SELECT settlement_date, terms_id, channel_id, interval_minutes,
           list((secs // (60 * interval_minutes))::INTEGER ORDER BY secs) AS slots,
           list(kwh ORDER BY secs) AS kwhs, list(flag_id ORDER BY secs) AS fls,
           min(flag_id) AS f_lo, max(flag_id) AS f_hi,
           bool_or(secs % (60 * interval_minutes) <> 0) AS off_grid
    FROM r GROUP BY ALL
)
SELECT settlement_date, terms_id, channel_id, interval_minutes,
       -- a whole day (every slot once) is its list as it is; a partial one is placed by slot
       CASE WHEN len(list_distinct(slots)) = 1440 // interval_minutes
                 AND len(slots) = 1440 // interval_minutes THEN kwhs
            ELSE list_transform(range(1440 // interval_minutes),
                                i -> kwhs[list_position(slots, i::INTEGER)]) END,
       fls[1],
       CASE WHEN f_lo = f_hi THEN NULL
            WHEN len(list_distinct(slots)) = 1440 // interval_minutes
                 AND len(slots) = 1440 // interval_minutes THEN fls
            ELSE list_transform(range(1440 // interval_minutes),
                                i -> fls[list_position(slots, i::INTEGER)]) END
FROM g
-- a read off its grid has no slot: NULL fails the NOT NULL constraint and the migration
WHERE NOT off_grid OR error('a settled read is off its interval grid: cannot migrate') IS NULL
ORDER BY settlement_date, terms_id, channel_id, interval_minutes
"""


def fill_wholesale_days(con: duckdb.DuckDBPyConnection) -> None:
    """Move every settled day of ``wholesale_values`` into ``wholesale_days``, a day per
    statement, then replace the table by the view (the v11 migration)."""
    days = [
        d
        for (d,) in con.execute(
            "SELECT DISTINCT settlement_date FROM wholesale_values ORDER BY 1"
        ).fetchall()
    ]
    for day in days:
        con.execute(MOVE_DAY_SQL, {"day": day})
    con.execute("DROP TABLE wholesale_values")
    con.execute(WHOLESALE_VALUES_VIEW)


WHOLESALE_N_READS_V13_SQL = """
-- the count of slots with a read, copied from meter_days (v12) when a day is settled: the
-- day's counts (reads, missing prices, estimates) and the manifest's cost test read it, not
-- every array (list_count over a 100,000-account day's arrays: 0.7-2.4 s within the settling
-- transaction, measured). Nullable, as meter_days.n_reads: a NULL is counted from the array.
ALTER TABLE wholesale_days ADD COLUMN n_reads SMALLINT;
UPDATE wholesale_days SET n_reads = list_count(kwh);
"""
