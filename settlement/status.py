"""What the store holds, at a glance: the analyst's first look before a nightly run.

Counts and coverage only, from the file registry, the day rows' stored counts, the prices and
the small tables (no meter reading or array is read), so it is quick on a store of years. The one check it makes:
market days with meter data but an incomplete day of prices for a region that customers are
in, the days whose bills the nightly will hold for a missing price.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import duckdb

from settlement.store import Store, market_day_no

FILES_SQL = """
SELECT kind, count(*) AS files, sum(rows_loaded)::BIGINT AS rows_loaded,
       sum(rows_quarantined)::BIGINT AS rows_quarantined,
       count(*) FILTER (status = 'rejected') AS files_rejected,
       max(ingested_at) AS last_ingested_at
FROM ingested_files GROUP BY ALL ORDER BY kind
"""

METER_SQL = """
SELECT count(DISTINCT channel_id) AS channels, count(*) AS channel_days,
       coalesce(sum(n_reads), 0)::BIGINT AS readings,
       min(market_day) AS first_day, max(market_day) AS last_day
FROM meter_days WHERE is_current
"""

# per region and market day (UTC+10): the minutes priced, the intervals and their span; made
# once (a temp table) for the two queries below, one scan of the prices
PRICED_DAYS_SQL = f"""
CREATE OR REPLACE TEMP TABLE _priced_days AS
SELECT region, DATE '1970-01-01' + ({market_day_no("interval_start")})::INTEGER AS market_day,
       sum(interval_minutes) AS minutes, count(*) AS n, min(interval_start) AS first,
       max(interval_start) AS last
FROM price_reads_raw WHERE is_current GROUP BY ALL
"""

# per region: the current prices' span, their count, and the market days in that span whose
# intervals do not cover the day (fewer than 1440 minutes priced)
PRICES_SQL = """
SELECT region, min(first) AS first_interval, max(last) AS last_interval,
       sum(n)::BIGINT AS intervals, min(market_day) AS first_day, max(market_day) AS last_day,
       ((max(market_day) - min(market_day) + 1) - count(*) FILTER (minutes >= 1440))::BIGINT
         AS incomplete_days
FROM _priced_days GROUP BY ALL ORDER BY region
"""

# market days with current meter data of a customer's channel and no full day of prices in the
# customer's region: the days the nightly holds bills on for a missing price
UNPRICED_SQL = """
WITH metered AS (
    SELECT DISTINCT c.region, m.market_day
    FROM meter_days m JOIN meter_channels ch USING (channel_id)
    JOIN customers c ON c.nmi = ch.nmi
    WHERE m.is_current
)
SELECT m.region, count(*) AS days, min(m.market_day) AS first_day,
       max(m.market_day) AS last_day
FROM metered m LEFT JOIN _priced_days p USING (region, market_day)
WHERE coalesce(p.minutes, 0) < 1440
GROUP BY ALL ORDER BY region
"""

CUSTOMERS_SQL = """
SELECT count(*) AS accounts, count(*) FILTER (move_out IS NOT NULL) AS moved_out,
       count(DISTINCT region) AS regions
FROM customers
"""

ENROLMENTS_SQL = """
SELECT product, count(DISTINCT account) AS accounts FROM enrolments GROUP BY ALL ORDER BY product
"""

BILLS_SQL = """
SELECT status, kind, count(*) AS bills, min(period_start) AS first_period_start,
       max(period_end) AS last_period_end
FROM bills WHERE NOT shadow GROUP BY ALL ORDER BY status, kind
"""

RUNS_SQL = """
SELECT run_id, date_from, date_to, status, exit_code, finished_at
FROM runs WHERE kind = 'nightly' ORDER BY started_at DESC, run_id LIMIT 1
"""


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    rel = con.execute(sql)
    cols = [d[0] for d in rel.description or []]
    return [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]


def store_status(store: Store, path: Path | None = None) -> dict[str, Any]:
    """The store at a glance (see the module docstring): schema version and size, ingested
    files per kind, meter data and price coverage, unpriced metered days, customers and
    enrolments, bills per status and kind, quarantined rows and the latest nightly run."""
    con = store.con
    size = path.stat().st_size if path is not None and path.exists() else None
    last = _rows(con, RUNS_SQL)
    con.execute(PRICED_DAYS_SQL)
    prices, unpriced = _rows(con, PRICES_SQL), _rows(con, UNPRICED_SQL)
    con.execute("DROP TABLE _priced_days")
    return {
        "store": {
            "path": str(path) if path is not None else None,
            "schema_version": store.schema_version(),
            "size_mb": None if size is None else round(size / 1e6, 1),
            "duckdb": duckdb.__version__,
        },
        "files": _rows(con, FILES_SQL),
        "meter": _rows(con, METER_SQL)[0],
        "prices": prices,
        "unpriced_metered_days": unpriced,
        "customers": _rows(con, CUSTOMERS_SQL)[0],
        "enrolments": _rows(con, ENROLMENTS_SQL),
        "bills": _rows(con, BILLS_SQL),
        "quarantined_rows": _rows(con, "SELECT count(*) AS n FROM quarantine")[0]["n"],
        "last_run": last[0] if last else None,
        "as_of": dt.datetime.now(dt.UTC),
    }
