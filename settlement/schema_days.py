"""Schema v10: interval readings as day arrays, ``meter_days`` (see :mod:`settlement.meter_days`).

One row per channel, NEM market day (UTC+10) and version, the day's kWh as a ``DOUBLE[]`` of
``1440 / interval_minutes`` slots. The migration derives the rows of every stored reading (in batches of channels); from
then on ingestion keeps them in step with ``meter_values`` in the same transaction.
"""

from __future__ import annotations

import duckdb


def slot_start_sql(day: str, slot: str, minutes: str) -> str:
    """SQL: the UTC start (TIMESTAMPTZ) of 0-based slot ``slot`` of an array of market day
    ``day`` (a DATE expression) at ``minutes`` a slot (market time is UTC+10 all year).
    Every argument is an expression written by this code, never input."""
    return f"(timezone('Etc/GMT-10', {day}::TIMESTAMP) + to_minutes(({slot}) * {minutes}))"


def n_reads_sql(row: str) -> str:
    """SQL: the count of slots with a reading of day array row ``row`` (a ``meter_days`` or
    ``wholesale_days`` alias, written by this code): its stored count (schema v12/v13), or,
    where none is stored, the array's own count (``list_count`` reads the array)."""
    return f"coalesce({row}.n_reads, list_count({row}.kwh))"


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
-- v12 adds n_reads SMALLINT: the count of slots with a reading
"""


def fill_days(con: duckdb.DuckDBPyConnection) -> None:
    """Derive ``meter_days`` from every stored reading, in batches of channels (one statement
    over every reading of a large store ran out of memory: 144 M readings, 18.8 GiB)."""
    from settlement.meter_days import refresh_all_days  # the module imports the store

    # the derivation writes the columns of today's table: v12's n_reads and v16's kwh_sum too
    # (v12 and v16 then fill only the rows left without one)
    con.execute("ALTER TABLE meter_days ADD COLUMN n_reads SMALLINT")
    con.execute("ALTER TABLE meter_days ADD COLUMN kwh_sum DOUBLE")
    refresh_all_days(con)


N_READS_V12_SQL = """
-- the count of slots with a reading, kept with the row: the billing pass reads an array as it is
-- stored when every slot has one, and telling that by list_count read every array (0.4-0.5 s
-- a 20,000-account month, measured). Every write fills it; it stays nullable (DuckDB 1.5 cannot
-- SET NOT NULL after an UPDATE in one transaction), and a NULL only sends the array to the
-- element-wise path.
ALTER TABLE meter_days ADD COLUMN IF NOT EXISTS n_reads SMALLINT;
-- (rows the v10 derivation of this same migration run already counted are not counted again)
UPDATE meter_days SET n_reads = list_count(kwh) WHERE n_reads IS NULL;
"""


DAY_SUMS_V16_SQL = """
-- the sum of the row's readings, kept with the row (coalesce(list_sum(kwh), 0), NaN and
-- infinities included): the energy audits compare a period's metered kWh with what was billed,
-- accrued or settled without reading the arrays of its whole days (a month of 100,000
-- accounts: 0.015 s against 0.5-1.1 s for list_sum over the arrays, measured). Every write
-- fills it; what the arrays hold is checked against it by those audits, which read the
-- settled and billed side from the arrays.
ALTER TABLE meter_days ADD COLUMN IF NOT EXISTS kwh_sum DOUBLE;
UPDATE meter_days SET kwh_sum = coalesce(list_sum(kwh), 0.0) WHERE kwh_sum IS NULL;
"""
