"""Daily wholesale settlement: the retailer's cost of every account interval.

Stored per read (table ``wholesale_reads``: one row per account, channel and interval):
``amount_aud = kwh x DLF x MLF x price_per_mwh / 1000`` (DOMAIN.md section 4): the wholesale
cost of an import channel (suffix E*), the spot value of an export channel (B*). The view
``wholesale_settlement`` pivots it per account interval (import/export kWh, cost, export value).
A settlement day is a NEM market day: intervals starting in ``[D 00:00, D+1 00:00)`` UTC+10.

The price of a meter interval is the time-weighted mean of the price intervals it covers (a
30-minute read under 5-minute prices takes the mean of six prices; a 5-minute read under a
30-minute price takes that price). An interval whose price is not fully covered is stored with a
NULL cost and ``status = 'missing_price'``: a missing price never counts as zero. Where prices
of two interval lengths cover the same time (30-minute trading and 5-minute dispatch prices before
2021-10-01), the longer one is used: it is the price that was settled.
"""

from __future__ import annotations

import datetime as dt

from settlement.failpoints import failpoint
from settlement.store import Store, with_literals

MARKET_TZ = "Etc/GMT-10"  # NEM market time, UTC+10 all year (POSIX sign convention)

SETTLE_SQL = """
WITH acct AS (
    SELECT account, nmi, region, dlf, mlf,
           timezone('Etc/GMT-10', move_in::TIMESTAMP) AS supply_from,
           timezone('Etc/GMT-10', coalesce(move_out, DATE '9999-12-31')::TIMESTAMP) AS supply_to
    FROM customers
),
reads AS (
    -- one row per current read of an energy channel (E* import, B* export); no aggregation:
    -- grouping millions of interval keys is what would make this slow
    SELECT a.account, m.nmi, m.suffix, a.region, m.interval_start, m.interval_minutes, m.kwh,
           a.dlf, a.mlf, m.quality
    FROM meter_reads_raw m
    JOIN acct a ON a.nmi = m.nmi
     AND m.interval_start >= a.supply_from AND m.interval_start < a.supply_to
    WHERE m.is_current AND m.interval_start >= $start AND m.interval_start < $end
      AND (m.suffix[1] = 'E' OR m.suffix[1] = 'B')
),
px_by_length AS (
    -- time-weighted mean price over each (region, meter interval), per price interval length
    SELECT r.region, r.interval_start, r.interval_minutes, p.interval_minutes AS price_minutes,
           sum(p.price_per_mwh * o.overlap_s) / sum(o.overlap_s) AS price_per_mwh,
           sum(o.overlap_s) AS covered_s
    FROM (SELECT DISTINCT region, interval_start, interval_minutes FROM reads) r
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
SELECT r.account, r.nmi, r.suffix, r.region, r.interval_start, r.interval_minutes,
       $settlement_date AS settlement_date, r.kwh, r.dlf, r.mlf,
       CASE WHEN px.covered_s = 60 * r.interval_minutes THEN px.price_per_mwh END AS price_per_mwh,
       CASE WHEN px.covered_s = 60 * r.interval_minutes
            THEN r.kwh * r.dlf * r.mlf * px.price_per_mwh / 1000 END AS amount_aud,
       r.quality,
       CASE WHEN px.covered_s IS DISTINCT FROM 60 * r.interval_minutes THEN 'missing_price'
            WHEN r.quality IN ('E', 'S', 'N') THEN 'estimated' ELSE 'ok' END AS status
FROM reads r
LEFT JOIN px USING (region, interval_start, interval_minutes)
"""


def market_day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """UTC start and end of NEM market day ``day`` (UTC+10, no daylight saving)."""
    aest = dt.timezone(dt.timedelta(hours=10))
    start = dt.datetime.combine(day, dt.time(0), tzinfo=aest)
    return start.astimezone(dt.UTC), (start + dt.timedelta(days=1)).astimezone(dt.UTC)


def settle_day(store: Store, day: dt.date, run_id: str) -> dict[str, int]:
    """Replace the wholesale settlement of market day ``day`` (one transaction).

    Returns counts: rows, missing_price, estimated. Rerunning gives identical rows.
    """
    start, end = market_day_bounds(day)
    # the day's bounds as typed literals: the parameterised scan of meter_values was not pruned
    # by time (7.1 s against 4.2 s for a 28.8 M-read day)
    sql = with_literals(SETTLE_SQL, {"start": start, "end": end, "settlement_date": day})
    with store.transaction() as con:
        con.execute("DELETE FROM wholesale_reads WHERE settlement_date = ?", [day])
        con.execute(
            f"INSERT INTO wholesale_reads SELECT *, $run_id FROM ({sql})", {"run_id": run_id}
        )
        failpoint("settle.in_transaction")
        con.execute(
            "INSERT OR REPLACE INTO settled_days SELECT ?, ?, coalesce(max(file_id), 0) "
            "FROM ingested_files",
            [day, run_id],
        )
        row = con.execute(
            "SELECT count(*), count(*) FILTER (status = 'missing_price'),"
            " count(*) FILTER (status = 'estimated') FROM wholesale_reads"
            " WHERE settlement_date = ?",
            [day],
        ).fetchall()[0]
    return {"rows": int(row[0]), "missing_price": int(row[1]), "estimated": int(row[2])}


def revised_days(store: Store) -> list[dt.date]:
    """Settled market days whose meter reads or prices changed after they were settled.

    A day is revised when a file ingested since the newest settlement holds reads or prices
    inside that day. Call it after ingesting and before settling: every run does, so files are
    only ever new once, and the scan touches only the rows of new files (file_id zone maps).
    """
    rows = store.con.execute(
        """
        WITH changed AS (
            SELECT DISTINCT (interval_start AT TIME ZONE 'Etc/GMT-10')::DATE AS day, file_id
            FROM meter_reads_raw
            WHERE file_id > (SELECT coalesce(max(input_max_file_id), 0) FROM settled_days)
            UNION
            SELECT DISTINCT (interval_start AT TIME ZONE 'Etc/GMT-10')::DATE AS day, file_id
            FROM price_reads_raw
            WHERE file_id > (SELECT coalesce(max(input_max_file_id), 0) FROM settled_days)
        )
        SELECT DISTINCT s.settlement_date FROM settled_days s
        JOIN changed c ON c.day = s.settlement_date AND c.file_id > s.input_max_file_id
        ORDER BY 1
        """
    ).fetchall()
    return [r[0] for r in rows]
