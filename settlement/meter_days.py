"""Interval readings as day arrays: ``meter_days``, one row per channel, market day and version.

A NEM12 300 record is one channel's market day of readings (NEM time, UTC+10, the settlement
day). ``meter_days`` stores them in that shape: the kWh of the day as one ``DOUBLE[]`` of
``1440 / interval_minutes`` slots, slot ``i`` being the interval that starts ``i x
interval_minutes`` after the market day's 00:00 (UTC+10); a NULL slot has no reading. Day rows
make the hot queries one inner product per channel-day instead of a join per reading; the layout
study and the migration plan are in ``docs/day-arrays.md``.

Until ingestion writes day rows itself (slice 5 of that plan), ``meter_days`` is **derived** from
``meter_values`` and kept in step with it in the same transaction: whenever readings of a
(channel, market day) are added or change ``is_current``, the day's rows are rebuilt from its
readings by :func:`refresh_days`:

- the **current** readings of a day make one current row per interval length (NEM12 never
  leaves two lengths current in one day: a newer day replaces the whole day), carrying the
  newest (version_at, file_id, source_line) among them;
- the **superseded** readings make one row per (interval length, file, line) they came from,
  ``is_current`` false: the versions, for "as known at" queries. A superseded record whose
  readings were partly duplicates of a stored version (not stored again, see
  ``data/formats/nem12.md``) leaves NULL slots there.
- ``flag_id`` is the day's flag (quality, method, reason) when all its readings share one;
  otherwise (V days, from 400 records) ``flags`` holds a flag per slot and ``flag_id`` the flag
  of the day's first reading.

Readings whose start is not on their interval length's grid cannot have a slot; NEM12 cannot
express them (its values are positional). They stay in ``meter_values`` only, and
:data:`DAYS_MATCH_VALUES_SQL` names them.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import polars as pl

from settlement.schema_days import slot_start_sql
from settlement.schema_wholesale_refs import MATERIALISE_SQL
from settlement.store import market_day_no, table_exists, with_literals

EPOCH_DAY = dt.date(1970, 1, 1)

# a reading's market day number, and its seconds since that day's 00:00 (UTC+10)
_DAY_NO = market_day_no("v.interval_start")
_SECS = "((epoch_us(v.interval_start) // 1000000 + 36000) % 86400)"

# {filter}: a WHERE clause on meter_values v (code-written, with literal bounds so DuckDB prunes
# row groups by them); {keys}: "" or a SEMI JOIN restricting to _day_keys(channel_id, day_no)
_DERIVE_SQL = (
    """
INSERT INTO meter_days
WITH r AS NOT MATERIALIZED (
    SELECT v.channel_id, {_day} AS day_no, v.interval_minutes, v.is_current,
           CASE WHEN v.is_current THEN 0 ELSE v.file_id END AS g_file,
           CASE WHEN v.is_current THEN 0 ELSE v.source_line END AS g_line,
           ({_secs} // (60 * v.interval_minutes))::INTEGER AS slot,
           v.kwh, v.flag_id, v.version_at, v.file_id, v.source_line
    FROM meter_values v
    WHERE {filter} AND {_secs} % (60 * v.interval_minutes) = 0
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
SELECT channel_id, DATE '1970-01-01' + day_no::INTEGER, interval_minutes, {kwh}, f_first,
       CASE WHEN f_lo = f_hi THEN NULL
            WHEN n = 1440 // interval_minutes THEN fls
            ELSE list_transform(range(1440 // interval_minutes),
                                i -> fls[list_position(slots, i::INTEGER)]) END,
       make_timestamptz(((newest >> 64) - 4611686018427387904)::BIGINT), ((newest >> 32) & 4294967295)::BIGINT,
       (newest & 4294967295)::INTEGER, is_current, n::SMALLINT, coalesce(list_sum({kwh}), 0.0)
FROM g LEFT JOIN odd USING (channel_id, day_no, interval_minutes, is_current, g_file, g_line)
ORDER BY day_no, channel_id, newest
""".replace("{_day}", _DAY_NO)
    .replace("{_secs}", _SECS)
    .replace(
        # a day's array: its readings in slot order, NULL where a slot has none
        "{kwh}",
        "(CASE WHEN n = 1440 // interval_minutes THEN kwhs ELSE list_transform("
        "range(1440 // interval_minutes), i -> kwhs[list_position(slots, i::INTEGER)]) END)",
    )
)

FULL_DERIVE_SQL = _DERIVE_SQL.format(filter="true", keys="")
"""Derive ``meter_days`` from every reading in one statement (small stores and tests; the
migration goes in batches, :func:`refresh_all_days`)."""

_DELETE_SQL = """
DELETE FROM meter_days d USING _day_keys k
WHERE d.market_day BETWEEN $lo_day AND $hi_day
  AND d.channel_id = k.channel_id AND d.market_day = DATE '1970-01-01' + k.day_no::INTEGER
"""


def refresh_days(con: duckdb.DuckDBPyConnection, file_ids: list[int]) -> int:
    """Rebuild the ``meter_days`` rows of every (channel, market day) that has a reading from
    ``file_ids``; return the number of such days. See :func:`refresh_day_keys`."""
    if not file_ids:
        return 0
    ids = sorted({int(f) for f in file_ids})
    id_filter = "v.file_id IN (" + ", ".join(str(i) for i in ids) + ")"  # integers, not input
    return refresh_day_keys(con, _days_of(con, id_filter))


def _days_of(con: duckdb.DuckDBPyConnection, where: str) -> pl.DataFrame:
    """The (channel_id, day_no) days of the readings of ``meter_values v`` matching ``where``
    (code-written SQL)."""
    return con.execute(
        f"SELECT DISTINCT channel_id, ({_DAY_NO})::INTEGER AS day_no FROM meter_values v"
        f" WHERE {where}"
    ).pl()


BATCH_DAYS = 50_000
"""Channel-days derived per statement: at most 14.4 M readings of 5 minutes (the list
aggregation holds a batch's readings in memory; 144 M at once took 18.8 GiB and failed)."""


def refresh_all_days(con: duckdb.DuckDBPyConnection) -> int:
    """Rebuild ``meter_days`` from every stored reading (the v10 migration); return the days."""
    return refresh_day_keys(con, _days_of(con, "true"))


def refresh_day_keys(con: duckdb.DuckDBPyConnection, keys: pl.DataFrame) -> int:
    """Rebuild the ``meter_days`` rows of the (``channel_id``, ``day_no``) days in ``keys``
    (see :func:`_refresh_batch`), at most :data:`BATCH_DAYS` days per statement, cut between
    channels; return the number of days."""
    keys = keys.unique().sort("channel_id", "day_no")
    start = 0
    while start < keys.height:
        end = min(start + BATCH_DAYS, keys.height)
        # extend to the end of the last channel so that a batch's channel range is its own
        last = keys["channel_id"][end - 1]
        while end < keys.height and keys["channel_id"][end] == last:
            end += 1
        _refresh_batch(con, keys.slice(start, end - start))
        start = end
    return keys.height


def _refresh_batch(con: duckdb.DuckDBPyConnection, keys: pl.DataFrame) -> int:
    """Rebuild the ``meter_days`` rows of the (``channel_id``, ``day_no``) days in ``keys``
    (``day_no``: the market day as days since 1970-01-01) from their readings in
    ``meter_values``; return the number of days.

    Call it inside the transaction that wrote the readings, after their ``is_current`` is
    final: the rebuilt days then carry the superseded versions of other files too. The scan is
    bounded by the days' date and channel range (literal bounds: DuckDB prunes row groups by
    them).
    """
    if keys.height == 0:
        return 0
    lo, hi = int(keys["day_no"].min()), int(keys["day_no"].max())  # type: ignore[arg-type]
    ch_lo = int(keys["channel_id"].min())  # type: ignore[arg-type]
    ch_hi = int(keys["channel_id"].max())  # type: ignore[arg-type]
    lo_day, hi_day = EPOCH_DAY + dt.timedelta(days=lo), EPOCH_DAY + dt.timedelta(days=hi)
    t_lo = dt.datetime.combine(lo_day, dt.time(), dt.UTC) - dt.timedelta(hours=10)
    t_hi = dt.datetime.combine(hi_day, dt.time(), dt.UTC) + dt.timedelta(hours=14)
    _keys = keys.select(  # scanned by name in the SQL below
        pl.col("channel_id").cast(pl.Int32), pl.col("day_no").cast(pl.Int64)
    )
    # a temp table, not the frame: DuckDB 1.5 crashes scanning a frame twice in one query
    con.execute("CREATE OR REPLACE TEMP TABLE _day_keys AS SELECT * FROM _keys")
    bounds = {"lo_day": lo_day, "hi_day": hi_day}
    if table_exists(con, "wholesale_day_rows"):  # schema v14 (the v10 migration runs before)
        # settled days that refer to the rows about to be deleted take copies of their arrays
        con.execute(with_literals(MATERIALISE_SQL, bounds))
    con.execute(with_literals(_DELETE_SQL, bounds))
    scope = (
        with_literals(
            "v.interval_start >= $t_lo AND v.interval_start < $t_hi",
            {"t_lo": t_lo, "t_hi": t_hi},
        )
        + f" AND v.channel_id BETWEEN {ch_lo} AND {ch_hi}"
    )
    con.execute(
        _DERIVE_SQL.format(filter=scope, keys="SEMI JOIN _day_keys USING (channel_id, day_no)")
    )
    con.execute("DROP TABLE _day_keys")
    return keys.height


DAYS_MATCH_VALUES_SQL = """
-- current readings that the current day rows do not hold, or hold differently, and the reverse:
-- must return no rows while meter_days is derived from meter_values
WITH d AS (
    SELECT channel_id, interval_minutes, market_day,
           unnest(kwh) AS kwh,
           unnest(coalesce(flags, list_transform(kwh, x -> flag_id))) AS flag_id,
           generate_subscripts(kwh, 1) - 1 AS slot
    FROM meter_days WHERE is_current
), days AS (
    SELECT channel_id, {start} AS interval_start, interval_minutes, kwh, flag_id
    FROM d WHERE kwh IS NOT NULL
), reads AS (
    SELECT channel_id, interval_start, interval_minutes, kwh, flag_id
    FROM meter_values WHERE is_current
)
(SELECT 'missing from meter_days' AS problem, * FROM (FROM reads EXCEPT ALL FROM days))
UNION ALL
(SELECT 'not in meter_values' AS problem, * FROM (FROM days EXCEPT ALL FROM reads))
UNION ALL
(SELECT 'n_reads is not the count of reads' AS problem, channel_id, NULL, interval_minutes,
        NULL, NULL
 FROM meter_days WHERE n_reads IS DISTINCT FROM list_count(kwh))
UNION ALL
(SELECT 'kwh_sum is not the sum of the reads' AS problem, channel_id, NULL, interval_minutes,
        NULL, NULL
 FROM meter_days WHERE kwh_sum IS DISTINCT FROM coalesce(list_sum(kwh), 0.0))
""".replace("{start}", slot_start_sql("market_day", "slot", "interval_minutes"))


def span_kwh_sql(day: str, utc_from: str, utc_to: str, n_ids: str) -> str:
    """SQL for the kWh of day array row ``day`` (a ``meter_days`` alias) read in ``[utc_from,
    utc_to)`` (TIMESTAMPTZ expressions: a read counts when its interval starts in the span),
    leaving out reads of quality N (``n_ids``: a ``SMALLINT[]`` expression of their flag ids).

    The span's slots are one slice of the array (``ceil`` of the offsets from the market day's
    00:00 UTC+10, clamped to the day), summed by ``list_sum``; only a day with a flag per slot
    (V) is summed element by element. All names are written by this code, never input."""
    day_no = f"({day}.market_day - DATE '1970-01-01')"
    lo, hi = (
        slot_bound_sql(f"epoch_us({t})", day_no, f"{day}.interval_minutes")
        for t in (utc_from, utc_to)
    )
    whole = f"{lo} = 0 AND {hi} = 1440 // {day}.interval_minutes"
    return (
        f"CASE WHEN {day}.flags IS NULL THEN"
        f" CASE WHEN list_contains({n_ids}, {day}.flag_id) THEN 0.0"
        # a whole day is summed where it is stored: a slice is a copy
        f" WHEN {whole} THEN coalesce(list_sum({day}.kwh), 0.0)"
        f" ELSE coalesce(list_sum({day}.kwh[{lo} + 1:{hi}]), 0.0) END"
        f" ELSE coalesce(list_sum(list_transform(range({lo} + 1, {hi} + 1),"
        f" i -> CASE WHEN list_contains({n_ids}, {day}.flags[i]) THEN NULL"
        f" ELSE {day}.kwh[i] END)), 0.0) END"
    )


def span_sums_sql(spans: str, keys: str, n_ids: str) -> str:
    """SQL of a relation (``keys``, ``kwh``): the current metered kWh of each span of relation
    ``spans`` (one row per span and channel: the ``keys`` columns, ``channel_id``, and the
    TIMESTAMPTZ bounds ``utc_from``, ``utc_to``; a read counts when its interval starts in
    ``[utc_from, utc_to)``), reads of quality N left out (``n_ids``, as for
    :func:`span_kwh_sql`). ``keys``: a comma-separated list of ``spans``' key columns.

    Three parts, one row of ``meter_days`` in exactly one of them:

    - a whole market day without a flag per slot counts its stored sum, ``kwh_sum`` (schema
      v16), so the arrays of a span's whole days are never read;
    - a span's first or last market day, where its bound is no market midnight (a local
      midnight of a site not on UTC+10, daylight saving), is a slice of its array;
    - any other day with a flag per slot (V) is summed element by element.

    The second and third parts join on equality to a handful of days or filter on ``flags``,
    which DuckDB pushes into the scan: for spans cut at market midnights with no V day they
    read no array at all. All names are written by this code, never input."""
    first = market_day_of_sql("s.utc_from")
    last = market_day_of_sql("s.utc_to - INTERVAL 1 MICROSECOND")
    # a bound that is not a market midnight (00:00 UTC+10) cuts its day
    from_cut = "(epoch_us(s.utc_from) + 36000000000) % 86400000000 <> 0"
    to_cut = "(epoch_us(s.utc_to) + 36000000000) % 86400000000 <> 0"
    day_no = "(m.market_day - DATE '1970-01-01')"
    lo, hi = (
        slot_bound_sql(f"epoch_us({t})", day_no, "m.interval_minutes")
        for t in ("s.utc_from", "s.utc_to")
    )
    stored = f"(m.flags IS NULL AND {lo} = 0 AND {hi} = 1440 // m.interval_minutes)"
    slice_kwh = span_kwh_sql("m", "s.utc_from", "s.utc_to", n_ids)
    cut_days = (
        f"(SELECT *, {first} AS day FROM {spans} s WHERE {from_cut}"
        f" UNION SELECT *, {last} AS day FROM {spans} s WHERE {to_cut})"
    )
    key_s = ", ".join(f"s.{k.strip()}" for k in keys.split(","))
    return f"""
SELECT {keys}, sum(kwh) AS kwh FROM (
    SELECT {key_s}, CASE WHEN list_contains({n_ids}, m.flag_id) THEN 0.0 ELSE m.kwh_sum END
             AS kwh
    FROM {spans} s JOIN meter_days m ON m.channel_id = s.channel_id AND m.is_current
     AND m.market_day BETWEEN {first} AND {last}
    WHERE {stored}
    UNION ALL
    SELECT {key_s}, {slice_kwh}
    FROM {cut_days} s JOIN meter_days m ON m.channel_id = s.channel_id
     AND m.market_day = s.day AND m.is_current
    WHERE NOT {stored}
    UNION ALL
    SELECT {key_s}, {slice_kwh}
    FROM {spans} s JOIN meter_days m ON m.channel_id = s.channel_id AND m.is_current
     AND m.market_day BETWEEN {first} AND {last}
    WHERE m.flags IS NOT NULL
      AND NOT ((m.market_day = {first} AND {from_cut}) OR (m.market_day = {last} AND {to_cut}))
) GROUP BY ALL"""


def slot_bound_sql(t_us: str, day_no: str, minutes: str) -> str:
    """SQL: the first slot of an array of market day number ``day_no`` at ``minutes`` a slot
    whose interval starts at or after instant ``t_us`` (microseconds since 1970, UTC), clamped
    to the day: ``[bound(from), bound(to))`` are the slots of a span ``[from, to)``, one slice.
    Every argument is an expression written by this code, never input."""
    return (
        f"least(greatest(ceil(({t_us} - ({day_no} * 86400000000 - 36000000000))"
        f" / ({minutes} * 60000000.0)), 0), 1440 // {minutes})::BIGINT"
    )


def market_day_of_sql(t: str) -> str:
    """SQL: the NEM market day (UTC+10) DATE of TIMESTAMPTZ expression ``t`` (code-written)."""
    return f"(DATE '1970-01-01' + ({market_day_no(t)})::INTEGER)"
