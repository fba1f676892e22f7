"""The channel pass over day arrays (``meter_days``): slice 3 of ``docs/day-arrays.md``.

:func:`settlement.billing_sql.channel_pass_sums` builds the run's clock (``_kc``: per 5-minute
instant, interval length, region and channel, the clock key ``ck`` and the spot columns of
:func:`tariffs.sql.channel_pass`) and the segments' channels (``_sc``). The per-read pass joins
every read to the clock on one integer key; this one works per day array instead:

- the clock becomes, per (market day, interval length, region, channel), a 0/1 **mask** per
  clock key ``ckm`` over the day's slots (``_km``), with the spot part ``sb`` under the mask
  for slots priced linearly, and per distinct loss factor the clamped spot price under the mask
  for slots whose floor or cap can bind (``_kr{j}``);
- each current day array of a segment's channel is cut into **slices**: the segment's slots of
  the day, split at the site's local midnight (the same pieces as the nightly's accruals, which
  are local days clipped to market days);
- a slice's kWh, interval count and amounts per clock key are inner products with the masks
  (``array_inner_product`` over the arrays cast to fixed size), each rounded to whole units of
  1e-13 and added as integers
  (:func:`tariffs.sql.exact_sum`). A bill from the pass and a bill from the accruals add the
  same integers, so they agree to the bit, as the per-read pass's did.

A slot without a read (NULL) or with a read of quality N counts no kWh and no interval (the
bill is held for the missing read, as before); such arrays, and those with a flag per slot, are
cleaned element by element, the rest go to the inner product as they are (15x faster than an
element-wise lambda over 100,000 arrays of 288, measured).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from zoneinfo import ZoneInfo

import duckdb
import polars as pl

from settlement.meter_days import market_day_of_sql, slot_bound_sql
from settlement.schema_days import slot_start_sql
from settlement.store import Store, with_literals
from tariffs.sql import ChannelPass, exact_sum

EPOCH = dt.date(1970, 1, 1)
DAY_US = 86_400_000_000
MARKET_US = 36_000_000_000  # UTC+10

# The current day arrays of the segments' channels over each segment's market days (``_sc sc``,
# ``meter_days m``); $lo_day/$hi_day: the run's first and last market day (literal bounds, so
# DuckDB prunes row groups by them).
_DAY_ROWS = f"""FROM _sc sc
    JOIN meter_days m ON m.channel_id = sc.channel_id AND m.is_current
     AND m.market_day BETWEEN {market_day_of_sql("sc.utc_from")}
                          AND {market_day_of_sql("sc.utc_to - INTERVAL 1 MICROSECOND")}
    WHERE m.market_day BETWEEN $lo_day AND $hi_day"""

# Clock instants aligned to their interval length, per market day and slot (an interval of
# length m starts on a multiple of m minutes: market midnight is 14:00 UTC, on every grid).
_KD_SQL = """
CREATE OR REPLACE TEMP TABLE _kd AS
SELECT (ts_us + {market}) // {day} AS day_no,
       ((ts_us + {market}) % {day}) // (minutes * 60000000) AS slot,
       minutes, region_idx, sfx, ckm{spot_cols}
FROM _kc WHERE ts_us % (minutes * 60000000) = 0
"""

# A span ``[f_us, t_us)``'s slots of a market day ``[lo, hi)`` at ``minutes`` a slot, split at
# the site's local midnight ``mid`` (the accruals' pieces: local days clipped to market days):
# from ``r`` (``f_us, t_us, day_no, minutes``), the pieces ``c`` with their bounds ``[a, e)`` on
# the day's array (bounds, not copies of it).
_SPLIT_CTE = """, b AS (
    SELECT r.*, {lo} AS lo, {hi} AS hi, {mid} AS mid
    FROM r LEFT JOIN _mid d USING (day_no)
), h AS (
    -- the day's slots before and after the local midnight (unnest, not a LATERAL join: DuckDB
    -- planned that as a dependent join, 0.4 s a 20,000-account batch)
    SELECT b.*, unnest([lo, greatest(lo, mid)]) AS a, unnest([least(hi, greatest(lo, mid)), hi]) AS e
    FROM b
), c AS (
    SELECT * FROM h WHERE a < e
)
"""

# The segments' day arrays cut into pieces (``c``, see :data:`_SPLIT_CTE`).
_PIECES_CTE = """
WITH r AS (
    SELECT sc.seg, sc.sfx, sc.region_idx, sc.loss_factor, m.interval_minutes AS minutes,
           (m.market_day - DATE '1970-01-01')::BIGINT AS day_no, m.kwh, m.flags, m.flag_id,
           epoch_us(sc.utc_from) AS f_us, epoch_us(sc.utc_to) AS t_us
    {day_rows}
      AND NOT (m.flags IS NULL AND list_contains($n_ids, m.flag_id)){which}
){split}"""

# an array with a read in every slot and one flag for the day is used as it is (``n_reads``:
# schema v12; a scalar test, where list_count read every array). A row without its count is
# not clean: it is cleaned element by element, never left out. (Every array holds its day's
# 1440 // interval_minutes slots, as written at ingestion and by the rebuild; the pass's cast
# to a fixed-size array would refuse one that did not.)
_CLEAN_ROW = "m.flags IS NULL AND coalesce(m.n_reads, -1) = 1440 // m.interval_minutes"
_CLEAN = f"\n      AND {_CLEAN_ROW}"
_DIRTY = f"\n      AND NOT ({_CLEAN_ROW})"

# The interval lengths of the segments' channels' current arrays over the run's market days,
# and whether any of them needs cleaning: scalar columns only, no array is read.
_LENGTHS_SQL = f"""
SELECT m.interval_minutes, bool_or(NOT ({_CLEAN_ROW})) AS dirty
FROM meter_days m
WHERE m.is_current AND m.market_day BETWEEN $lo_day AND $hi_day
  AND m.channel_id IN (SELECT channel_id FROM _sc)
GROUP BY 1 ORDER BY 1
"""

# The distinct piece bounds per market day and interval length (to cut the masks to), from the
# segments' distinct spans (few: the cycles' bounds) and the run's interval lengths
# ``$lengths``, over the run's market days ``[$lo_no, $hi_no]``; no array is read (a scan of
# the arrays' pieces took 0.4 s for 100,000 accounts' month).
_BOUNDS_SQL = """
CREATE OR REPLACE TEMP TABLE _bd AS
WITH s AS (
    SELECT DISTINCT epoch_us(utc_from) AS f_us, epoch_us(utc_to) AS t_us FROM _sc
), l AS (
    SELECT unnest($lengths) AS minutes
), r AS (
    SELECT f_us, t_us, minutes,
           unnest(range(greatest((f_us + {market}) // {day}, $lo_no),
                        least((t_us - 1 + {market}) // {day}, $hi_no) + 1)) AS day_no
    FROM s, l
){split}
SELECT DISTINCT day_no, minutes, a, e FROM c
"""

# The arrays with a missing read, a read of quality N or a flag per slot, cleaned element by
# element over the whole day: ``x`` the kWh (0 where nothing counts), ``p`` 1/0 per counted read.
# (Few rows: NEM12 days are whole; the lambda is 15x slower than ``list_dot_product``.)
_DIRTY_SQL = """
CREATE OR REPLACE TEMP TABLE _dirty AS
{pieces}
SELECT seg, sfx, region_idx, loss_factor, minutes, day_no, a, e,
       list_transform(range(1, 1440 // minutes + 1),
                      i -> CASE WHEN kwh[i] IS NULL
                                  OR list_contains($n_ids, coalesce(flags[i], flag_id))
                                THEN 0.0 ELSE kwh[i] END) AS x,
       list_transform(range(1, 1440 // minutes + 1),
                      i -> CASE WHEN kwh[i] IS NULL
                                  OR list_contains($n_ids, coalesce(flags[i], flag_id))
                                THEN 0.0 ELSE 1.0 END) AS p
FROM c
"""

# Per (day, length, region, channel): the clock key of every slot (NULL outside the run's
# clock), then a mask per key and piece ``[a, e)`` (1.0 on the key's slots of the piece, 0.0
# elsewhere), with the linear spot part under it and the mask's slot count ``n``.
_KM_SQL = """
CREATE OR REPLACE TEMP TABLE _km AS
WITH a AS (
    SELECT day_no, minutes, region_idx, sfx,
           list(slot ORDER BY slot) AS slots, list(ckm ORDER BY slot) AS ckms{sb_lists}
    FROM _kd GROUP BY ALL
), whole AS (
    SELECT day_no, minutes, region_idx, sfx,
           CASE WHEN len(slots) = 1440 // minutes THEN ckms
                ELSE list_transform(range(1440 // minutes),
                                    i -> ckms[list_position(slots, i)]) END AS ckms{sb_full}
    FROM a
), m AS (
    SELECT k.day_no, k.minutes, k.region_idx, k.sfx, k.ckm, p.a, p.e,
           list_transform(range(1, len(f.ckms) + 1),
                          i -> CASE WHEN f.ckms[i] = k.ckm AND i > p.a AND i <= p.e
                                    THEN 1.0 ELSE 0.0 END) AS mask{sb_masks}
    FROM (SELECT DISTINCT day_no, minutes, region_idx, sfx, ckm FROM _kd) k
    JOIN whole f USING (day_no, minutes, region_idx, sfx)
    JOIN _bd p ON p.day_no = k.day_no AND p.minutes = k.minutes
)
SELECT *, list_sum(mask)::BIGINT AS n FROM m
"""

# Per (day, length, region, channel, clock key, loss factor, piece): spot slot j's clamped
# price under the key's mask (0 elsewhere and where the price is NULL: the per-read sum skipped
# NULL terms).
_KR_SQL = """
CREATE OR REPLACE TEMP TABLE _kr{j} AS
WITH r AS (
    SELECT k.day_no, k.slot, k.minutes, k.region_idx, k.sfx, k.ckm, l.lf,
           greatest(least(greatest(k.sb{j} * CASE WHEN k.slf{j} THEN l.lf ELSE 1.0 END + k.sa{j},
                                   k.sf{j}), k.sc{j}), k.sfi{j}) AS rate
    FROM _kd k CROSS JOIN (SELECT DISTINCT loss_factor AS lf FROM _sc) l
), a AS (
    SELECT day_no, minutes, region_idx, sfx, lf,
           list(slot ORDER BY slot) AS slots, list(ckm ORDER BY slot) AS ckms,
           list(rate ORDER BY slot) AS rates
    FROM r GROUP BY ALL
), whole AS (
    SELECT day_no, minutes, region_idx, sfx, lf,
           list_transform(range(1440 // minutes), i -> ckms[list_position(slots, i)]) AS ckms,
           list_transform(range(1440 // minutes), i -> rates[list_position(slots, i)]) AS rates
    FROM a
)
SELECT k.day_no, k.minutes, k.region_idx, k.sfx, k.ckm, f.lf, p.a, p.e,
       list_transform(range(1, 1440 // k.minutes + 1),
                      i -> CASE WHEN f.ckms[i] = k.ckm AND i > p.a AND i <= p.e
                                THEN coalesce(f.rates[i], 0.0) ELSE 0.0 END) AS rate
FROM (SELECT DISTINCT day_no, minutes, region_idx, sfx, ckm FROM _kd) k
JOIN whole f USING (day_no, minutes, region_idx, sfx)
JOIN _bd p ON p.day_no = k.day_no AND p.minutes = k.minutes
"""

# The pass, per interval length (``{n}`` slots a day): every piece's kWh, interval count and
# amounts per clock key are inner products of its whole day array with the key's mask for the
# piece (no slice is cut or copied: the zeros outside the piece add nothing). Clean arrays are
# read where they are stored. The arrays and masks are cast to fixed-size ``DOUBLE[{n}]``
# (``array_inner_product``, the same sums to the bit as ``list_dot_product``): a fixed-size
# array goes through the mask join as one block, a list as offsets and a child vector (1.15 s
# against 1.8 s for 100,000 accounts' month of half-hours, measured). The cast also makes a
# fresh vector of the selected rows only: DuckDB 1.5's ``list_dot_product`` refuses a list
# vector holding a NULL anywhere, even in the rows a filter left out.
_PASS_SQL = """
{pieces}, s AS (
    SELECT seg, sfx, region_idx, loss_factor, minutes, day_no, a, e,
           kwh::DOUBLE[{n}] AS x, NULL::DOUBLE[{n}] AS p
    FROM c
    UNION ALL
    SELECT seg, sfx, region_idx, loss_factor, minutes, day_no, a, e, x::DOUBLE[{n}], p::DOUBLE[{n}]
    FROM _dirty WHERE minutes = {minutes}
)
SELECT s.seg, k.ckm, {quantity} AS quantity,
       sum(CASE WHEN s.p IS NULL THEN k.n
                ELSE array_inner_product(s.p, k.mask) END)::BIGINT AS n_intervals{amounts}
FROM s
JOIN (SELECT * REPLACE (mask::DOUBLE[{n}] AS mask{sbm}) FROM _km WHERE minutes = {minutes}) k
  ON k.day_no = s.day_no AND k.region_idx = s.region_idx AND k.sfx = s.sfx
 AND k.a = s.a AND k.e = s.e{joins}
GROUP BY ALL
HAVING n_intervals > 0
"""

# Intervals with an estimated (quality E) read on any of the segment's channels, counted once
# per interval: only the arrays holding such a flag are unnested.
_ESTIMATED_SQL = """
WITH r AS (
    SELECT sc.seg, sc.utc_from, sc.utc_to, m.market_day, m.interval_minutes AS minutes, m.kwh,
           m.flags, m.flag_id
    {day_rows}
      AND (list_contains($e_ids, m.flag_id) OR list_has_any(coalesce(m.flags, []), $e_ids))
), u AS (
    SELECT seg, utc_from, utc_to, market_day, minutes, kwh, flags, flag_id,
           generate_subscripts(kwh, 1) AS i
    FROM r
), s AS (
    SELECT *, {start} AS start FROM u
)
SELECT seg, count(DISTINCT start) AS estimated_intervals
FROM s
WHERE start >= utc_from AND start < utc_to AND kwh[i] IS NOT NULL
  AND list_contains($e_ids, coalesce(flags[i], flag_id))
GROUP BY seg
"""


def _midnights(site_timezone: str, lo_day: dt.date, hi_day: dt.date) -> pl.DataFrame:
    """Per market day in ``[lo_day, hi_day]``: where the site's local midnight falls in it
    (microseconds from the market day's 00:00 UTC+10)."""
    tz = ZoneInfo(site_timezone)
    rows: dict[int, int] = {}
    day = lo_day - dt.timedelta(days=1)
    while day <= hi_day + dt.timedelta(days=1):
        midnight = dt.datetime.combine(day, dt.time(0), tzinfo=tz)
        us = round(midnight.timestamp() * 1_000_000)
        day_no = (us + MARKET_US) // DAY_US
        rows.setdefault(day_no, (us + MARKET_US) % DAY_US)
        day += dt.timedelta(days=1)
    return pl.DataFrame(
        {"day_no": list(rows), "mid_us": list(rows.values())},
        schema={"day_no": pl.Int64, "mid_us": pl.Int64},
    )


def array_pass(
    store: Store,
    cp: ChannelPass,
    clamped: list[bool],
    bounds: pl.DataFrame,
    site_timezone: str,
    n_ids: list[int],
    e_ids: list[int],
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The pass's aggregate rows (``seg, ckm, quantity, n_intervals`` and per spot slot
    ``amount{j}`` where ``clamped[j]``, else ``sumb{j}``) and the estimated intervals per
    segment, from the current day arrays. Needs ``_sc`` and ``_kc`` (see the module
    docstring); leaves no tables behind."""
    lo, hi = bounds["utc_from"].min(), bounds["utc_to"].max()
    assert isinstance(lo, dt.datetime) and isinstance(hi, dt.datetime)
    lo_day = EPOCH + dt.timedelta(days=(round(lo.timestamp() * 1e6) + MARKET_US) // DAY_US)
    hi_day = EPOCH + dt.timedelta(days=(round(hi.timestamp() * 1e6) - 1 + MARKET_US) // DAY_US)
    nums = {"market": MARKET_US, "day": DAY_US}
    lit = {"lo_day": lo_day, "hi_day": hi_day}
    n_list = "[" + ", ".join(str(int(i)) for i in n_ids) + "]::SMALLINT[]"
    e_list = "[" + ", ".join(str(int(i)) for i in e_ids) + "]::SMALLINT[]"
    slots = range(cp.slots)
    spot_cols = "".join(f", sb{j}, sa{j}, sf{j}, sc{j}, sfi{j}, slf{j}" for j in slots)
    linear = [j for j in slots if not clamped[j]]
    con = store.con
    mid = _midnights(site_timezone, lo_day, hi_day)
    tables = ["_kd", "_km", "_mid", "_bd", "_dirty", *[f"_kr{j}" for j in slots if clamped[j]]]

    split = _SPLIT_CTE.format(
        lo=slot_bound_sql("f_us", "day_no", "minutes"),
        hi=slot_bound_sql("t_us", "day_no", "minutes"),
        mid=slot_bound_sql(
            "(day_no * 86400000000 - 36000000000) + coalesce(d.mid_us, 0)", "day_no", "minutes"
        ),
    )

    def pieces(which: str) -> str:
        sql = _PIECES_CTE.format(day_rows=_DAY_ROWS, which=which, split=split)
        return with_literals(sql, lit).replace("$n_ids", n_list)

    try:
        con.register("_mid_frame", mid.to_arrow())
        try:
            con.execute("CREATE OR REPLACE TEMP TABLE _mid AS SELECT * FROM _mid_frame")
        finally:
            con.unregister("_mid_frame")
        found = con.execute(with_literals(_LENGTHS_SQL, lit)).fetchall()
        lengths = [int(row[0]) for row in found]
        con.execute(
            _BOUNDS_SQL.format(split=split, **nums)
            .replace("$lengths", "[" + ", ".join(str(m) for m in lengths) + "]::BIGINT[]")
            .replace("$lo_no", str((lo_day - EPOCH).days))
            .replace("$hi_no", str((hi_day - EPOCH).days))
        )
        # no array to clean (every NEM12 day is whole): an empty _dirty, not a scan of them all
        dirty = any(bool(row[1]) for row in found)
        which = _DIRTY if dirty else _DIRTY + " AND false"
        con.execute(_DIRTY_SQL.format(pieces=pieces(which)).replace("$n_ids", n_list))
        con.execute(_KD_SQL.format(**nums, spot_cols=spot_cols))
        con.execute(
            _KM_SQL.format(
                sb_lists="".join(f", list(sb{j} ORDER BY slot) AS sbs{j}" for j in linear),
                sb_full="".join(
                    f", CASE WHEN len(slots) = 1440 // minutes THEN sbs{j} ELSE"
                    f" list_transform(range(1440 // minutes), i -> sbs{j}[list_position(slots, i)])"
                    f" END AS sbs{j}"
                    for j in linear
                ),
                sb_masks="".join(
                    f", list_transform(range(1, len(f.ckms) + 1), i -> CASE WHEN f.ckms[i] ="
                    f" k.ckm AND i > p.a AND i <= p.e THEN coalesce(f.sbs{j}[i], 0.0)"
                    f" ELSE 0.0 END) AS sbm{j}"
                    for j in linear
                ),
            )
        )
        for j in slots:
            if clamped[j]:
                con.execute(_KR_SQL.format(j=j))
        agg = pl.concat(
            [_length_pass(con, cp, clamped, linear, pieces, m) for m in lengths or [30]],
            how="vertical_relaxed",
        )
        estimated = (
            con.sql(
                with_literals(
                    _ESTIMATED_SQL.format(
                        day_rows=_DAY_ROWS, start=slot_start_sql("market_day", "i - 1", "minutes")
                    ),
                    lit,
                ).replace("$e_ids", e_list)
            ).pl()
            if e_ids
            else pl.DataFrame(schema={"seg": pl.Int64, "estimated_intervals": pl.Int64})
        )
    finally:
        for name in tables:
            con.execute(f"DROP TABLE IF EXISTS {name}")
    return agg, estimated


def _length_pass(
    con: duckdb.DuckDBPyConnection,
    cp: ChannelPass,
    clamped: list[bool],
    linear: list[int],
    pieces: Callable[[str], str],
    minutes: int,
) -> pl.DataFrame:
    """The pass's aggregate rows for the arrays of one interval length (see :data:`_PASS_SQL`);
    needs the tables :func:`array_pass` builds."""
    n = 1440 // minutes
    amounts, joins = [], []
    for j in range(cp.slots):
        if clamped[j]:
            joins.append(
                f"\nJOIN (SELECT * REPLACE (rate::DOUBLE[{n}] AS rate) FROM _kr{j}"
                f" WHERE minutes = {minutes}) r{j}"
                f" ON r{j}.day_no = s.day_no AND r{j}.region_idx = s.region_idx"
                f" AND r{j}.sfx = s.sfx AND r{j}.ckm = k.ckm AND r{j}.lf = s.loss_factor"
                f" AND r{j}.a = s.a AND r{j}.e = s.e"
            )
            amounts.append(f"{exact_sum(f'array_inner_product(s.x, r{j}.rate)')} AS amount{j}")
        else:
            amounts.append(f"{exact_sum(f'array_inner_product(s.x, k.sbm{j})')} AS sumb{j}")
    return con.sql(
        _PASS_SQL.format(
            pieces=pieces(_CLEAN + f"\n      AND m.interval_minutes = {minutes}"),
            n=n,
            minutes=minutes,
            quantity=exact_sum("array_inner_product(s.x, k.mask)"),
            amounts="".join(",\n       " + a for a in amounts),
            sbm="".join(f", sbm{j}::DOUBLE[{n}] AS sbm{j}" for j in linear),
            joins="".join(joins),
        )
    ).pl()
