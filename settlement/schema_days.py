"""Schema v10: interval readings as day arrays, ``meter_days`` (see :mod:`settlement.meter_days`).

One row per channel, NEM market day (UTC+10) and version, the day's kWh as a ``DOUBLE[]`` of
``1440 / interval_minutes`` slots. The migration derives the rows of every stored reading (in batches of channels); from
then on ingestion keeps them in step with ``meter_values`` in the same transaction.
"""

from __future__ import annotations

import duckdb

# seconds since the market day's 00:00 (UTC+10) of TIMESTAMPTZ column c, and its day number
SECS_SQL = "((epoch_us({c}) // 1000000 + 36000) % 86400)"
DAY_SQL = "((epoch_us({c}) // 1000000 + 36000) // 86400)"

# {filter}: a WHERE clause on meter_values v (code-written, with literal bounds so DuckDB prunes
# row groups by them); {keys}: "" or a SEMI JOIN restricting to _day_keys(channel_id, day_no)
DERIVE_SQL = """
INSERT INTO meter_days
WITH r AS NOT MATERIALIZED (
    SELECT v.channel_id, {day} AS day_no, v.interval_minutes, v.is_current,
           CASE WHEN v.is_current THEN 0 ELSE v.file_id END AS g_file,
           CASE WHEN v.is_current THEN 0 ELSE v.source_line END AS g_line,
           ({secs} // (60 * v.interval_minutes))::INTEGER AS slot,
           v.kwh, v.flag_id, v.version_at, v.file_id, v.source_line
    FROM meter_values v
    WHERE {filter} AND {secs} % (60 * v.interval_minutes) = 0
), k AS NOT MATERIALIZED (
    SELECT * FROM r {keys}
), g AS (
    -- a day's current readings make one row per interval length; superseded ones one row per
    -- (length, file, line)
    SELECT channel_id, day_no, interval_minutes, is_current, g_file, g_line,
           list(kwh ORDER BY slot) AS kwhs, count(*) AS n,
           min(flag_id) AS f_lo, max(flag_id) AS f_hi, arg_min(flag_id, slot) AS f_first,
           -- the newest (version_at, file_id, source_line), packed in one HUGEINT (a max of
           -- a STRUCT costs ~10x more in DuckDB 1.5); the offset keeps it positive
           max(((epoch_us(version_at)::HUGEINT + 4611686018427387904) << 64)
               + (file_id::HUGEINT << 32) + source_line) AS newest
    FROM k
    GROUP BY ALL
), odd AS (
    -- the few days with a slot missing or flags that differ: their slots and flags as lists
    SELECT channel_id, day_no, interval_minutes, is_current, g_file, g_line,
           list(slot ORDER BY slot) AS slots, list(flag_id ORDER BY slot) AS fls
    FROM k
    SEMI JOIN (SELECT * FROM g WHERE n < 1440 // interval_minutes OR f_lo <> f_hi) o
           USING (channel_id, day_no, interval_minutes, is_current, g_file, g_line)
    GROUP BY ALL
)
SELECT channel_id, DATE '1970-01-01' + day_no::INTEGER, interval_minutes,
       CASE WHEN n = 1440 // interval_minutes THEN kwhs
            ELSE list_transform(range(1440 // interval_minutes),
                                i -> kwhs[list_position(slots, i::INTEGER)]) END,
       f_first,
       CASE WHEN f_lo = f_hi THEN NULL
            WHEN n = 1440 // interval_minutes THEN fls
            ELSE list_transform(range(1440 // interval_minutes),
                                i -> fls[list_position(slots, i::INTEGER)]) END,
       make_timestamptz(((newest >> 64) - 4611686018427387904)::BIGINT), ((newest >> 32) & 4294967295)::BIGINT,
       (newest & 4294967295)::INTEGER, is_current
FROM g LEFT JOIN odd USING (channel_id, day_no, interval_minutes, is_current, g_file, g_line)
ORDER BY day_no, channel_id, newest
"""

FULL_DERIVE_SQL = DERIVE_SQL.format(
    day=DAY_SQL.format(c="v.interval_start"),
    secs=SECS_SQL.format(c="v.interval_start"),
    filter="true",
    keys="",
)
"""Fill ``meter_days`` from every reading in one statement (small stores and tests; the
migration goes in batches, :func:`fill_days`)."""

DAYS_V10_SQL = """
CREATE TABLE meter_days (
    channel_id       INTEGER NOT NULL,
    market_day       DATE NOT NULL,             -- NEM market day (UTC+10) of the readings
    interval_minutes SMALLINT NOT NULL,
    kwh              DOUBLE[] NOT NULL,         -- slot i starts i x interval_minutes after
                                                -- market_day 00:00 UTC+10; NULL = no reading
    flag_id          SMALLINT NOT NULL,         -- the day's flag (its first reading's if mixed)
    flags            SMALLINT[],                -- a flag per slot when they differ, else NULL
    version_at       TIMESTAMPTZ NOT NULL,
    file_id          BIGINT NOT NULL,
    source_line      INTEGER NOT NULL,
    is_current       BOOLEAN NOT NULL
);
"""


def fill_days(con: duckdb.DuckDBPyConnection) -> None:
    """Derive ``meter_days`` from every stored reading, in batches of channels (one statement
    over every reading of a large store ran out of memory: 144 M readings, 18.8 GiB)."""
    from settlement.meter_days import refresh_all_days  # the module imports the store

    refresh_all_days(con)
