"""Layout study: meter reads stored one row per read (today) or one row per channel and market day.

Not a benchmark of shipped code: it measures, on the same numbers in the same process, what the
store would cost and gain if a channel's day of reads were stored as one fixed-size array (the
shape of a NEM12 300 record) instead of one row per read. The figures feed the design note
``docs/day-arrays.md``; the issue targets they bear on are the ingestion throughput (issue 2),
billing against the bare join and PySAM (issue 3) and the nightly against its ingestion (issue 4).

It measures:

1. **store cost** of one 5-minute day of N channels (N x 288 reads) held in memory as Arrow,
   inserted into a fresh table and checkpointed: the per-read table with the columns of
   ``meter_values``, and a per-day table (a DOUBLE[288] of kWh, one quality per day);
2. **a month of 30-minute reads** (N accounts, E1 for all, B1 for every third, as
   ``bench/bench_billing.py`` generates them), in both layouts:

   - the bare join of reads to prices with one group-by (bench_billing's baseline);
   - a two-period time-of-use sum (peak 15:00-21:00 local time) per account: per read by the
     local hour, per day array by an inner product with the day's period masks (masks per market
     day, so daylight saving and a bill period's first and last local days are masks too);
   - a dynamic (spot pass-through) charge per account: per read ``kwh x clamp(spot x loss factor
     + adder, floor, cap)``, per day array the inner product with the day's rate array of the
     account's loss factor (one rate array per distinct loss factor and day);
   - reading a day of arrays back as rows with their interval starts (``unnest``), as a
     compatibility view ``meter_values`` over the arrays would;
3. PySAM UtilityRate5's time for one account-year (bench_billing's measurement).

Usage::

    uv run python bench/bench_day_arrays.py [--accounts 100000] [--workdir /tmp/fs-bench-days]

Prints the timings and one JSON line. Each query is timed warm (best of two runs).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_billing import pysam_account_year_seconds  # noqa: E402

MONTH_SQL = """
CREATE TABLE hh AS
SELECT ts, (row_number() OVER (ORDER BY ts) - 1)::INTEGER AS k
FROM (SELECT unnest(generate_series(TIMESTAMPTZ '2024-08-31 14:00:00+00',
                                   TIMESTAMPTZ '2024-09-30 13:30:00+00', INTERVAL 30 MINUTE)) AS ts);
CREATE TABLE prices AS
SELECT 'NSW1' AS region, ts AS interval_start,
       80 + 60 * sin(k / 48.0 * 2 * pi()) - CASE WHEN k % 48 BETWEEN 4 AND 10 THEN 120 ELSE 0 END
         AS price_per_mwh, k
FROM hh;
CREATE TABLE channels AS
SELECT i + 1 AS channel_id, i AS account_no, 'E1' AS suffix, 1.045 * 0.995 AS loss_factor
FROM range({n}) t(i)
UNION ALL
SELECT {n} + i // 3 + 1, i, 'B1', 1.045 * 0.995 FROM range(0, {n}, 3) t(i);
-- per read: the numbers of meter_values (schema v4)
CREATE TABLE reads AS
SELECT c.channel_id, h.ts AS interval_start, 30::SMALLINT AS interval_minutes,
       CASE WHEN c.suffix = 'E1'
            THEN round(0.1 + 0.6 * ((hash(c.account_no * 7919 + h.k) % 1000) / 1000.0), 3)
            WHEN h.k % 48 BETWEEN 0 AND 14
            THEN round(1.2 * ((hash(c.account_no + h.k) % 1000) / 1000.0), 3) ELSE 0 END AS kwh,
       1::SMALLINT AS flag_id, TIMESTAMPTZ '2024-10-01 00:00:00+00' AS version_at,
       2::BIGINT AS file_id, h.k AS source_line, true AS is_current
FROM channels c, hh h;
-- per channel and market day (UTC+10): the same numbers as one DOUBLE[48], from the same
-- formula (half-hour k of the month is slot k % 48 of market day k // 48)
CREATE TABLE days AS
SELECT c.channel_id, (DATE '2024-09-01' + d::INTEGER)::DATE AS market_day,
       30::SMALLINT AS interval_minutes,
       CASE WHEN c.suffix = 'E1'
            THEN list_transform(range(48), j -> round(
                     0.1 + 0.6 * ((hash(c.account_no * 7919 + d * 48 + j) % 1000) / 1000.0), 3))
            ELSE list_transform(range(48), j -> CASE WHEN j BETWEEN 0 AND 14 THEN round(
                     1.2 * ((hash(c.account_no + d * 48 + j) % 1000) / 1000.0), 3) ELSE 0 END)
       END::DOUBLE[48] AS kwh,
       1::SMALLINT AS flag_id, 2::BIGINT AS file_id, true AS is_current
FROM channels c, range(30) t(d);
CHECKPOINT;
"""

BASELINE = """
SELECT r.channel_id, sum(r.kwh * p.price_per_mwh) / 1000 AS cost
FROM reads r JOIN prices p ON p.interval_start = r.interval_start
JOIN channels c ON c.channel_id = r.channel_id
WHERE c.suffix = 'E1'
GROUP BY r.channel_id
"""

TOU_READS = """
SELECT r.channel_id,
       sum(r.kwh) FILTER (hour(timezone('Australia/Sydney', r.interval_start)) BETWEEN 15 AND 20)
         AS peak_kwh,
       sum(r.kwh) FILTER (NOT hour(timezone('Australia/Sydney', r.interval_start)) BETWEEN 15 AND 20)
         AS offpeak_kwh
FROM reads r JOIN channels c ON c.channel_id = r.channel_id
WHERE c.suffix = 'E1' AND r.is_current
GROUP BY r.channel_id
"""

# masks per market day: slot k of market day D starts at D 00:00 UTC+10 + 30k minutes; its
# local hour decides its period (a day of daylight saving shifts the mask by two slots)
MASKS = """
CREATE OR REPLACE TABLE masks AS
SELECT market_day,
       list(CASE WHEN h BETWEEN 15 AND 20 THEN 1.0 ELSE 0.0 END ORDER BY k)::DOUBLE[48] AS peak,
       list(CASE WHEN h BETWEEN 15 AND 20 THEN 0.0 ELSE 1.0 END ORDER BY k)::DOUBLE[48] AS offpeak
FROM (SELECT DISTINCT market_day FROM days) d,
     LATERAL (SELECT k, hour(timezone('Australia/Sydney',
                  timezone('Etc/GMT-10', d.market_day::TIMESTAMP) + INTERVAL 30 MINUTE * k)) AS h
              FROM range(48) t(k))
GROUP BY market_day
"""

TOU_DAYS = """
SELECT d.channel_id, sum(array_inner_product(d.kwh, m.peak)) AS peak_kwh,
       sum(array_inner_product(d.kwh, m.offpeak)) AS offpeak_kwh
FROM days d JOIN masks m USING (market_day) JOIN channels c USING (channel_id)
WHERE c.suffix = 'E1' AND d.is_current
GROUP BY d.channel_id
"""

DYN_READS = """
SELECT r.channel_id,
       sum(r.kwh * greatest(least(p.price_per_mwh / 1000 * c.loss_factor + 0.12, 1.0), -0.5))
         AS amount
FROM reads r JOIN prices p ON p.interval_start = r.interval_start
JOIN channels c ON c.channel_id = r.channel_id
WHERE c.suffix = 'E1' AND r.is_current
GROUP BY r.channel_id
"""

# one rate array per loss factor and market day, then one inner product per channel-day
RATES = """
CREATE OR REPLACE TABLE rates AS
SELECT lf.loss_factor, (DATE '2024-09-01' + (p.k // 48))::DATE AS market_day,
       list(greatest(least(p.price_per_mwh / 1000 * lf.loss_factor + 0.12, 1.0), -0.5)
            ORDER BY p.k)::DOUBLE[48] AS rate
FROM prices p, (SELECT DISTINCT loss_factor FROM channels) lf
GROUP BY ALL
"""

DYN_DAYS = """
SELECT d.channel_id, sum(array_inner_product(d.kwh, r.rate)) AS amount
FROM days d JOIN channels c USING (channel_id)
JOIN rates r ON r.market_day = d.market_day AND r.loss_factor = c.loss_factor
WHERE c.suffix = 'E1' AND d.is_current
GROUP BY d.channel_id
"""

UNNEST_DAY = """
SELECT count(*), sum(kwh), max(interval_start) FROM (
    SELECT channel_id,
           timezone('Etc/GMT-10', market_day::TIMESTAMP) + INTERVAL 30 MINUTE * (k - 1)
             AS interval_start,
           kwh[k] AS kwh
    FROM days, range(1, 49) t(k) WHERE market_day = DATE '2024-09-15')
"""


def best_of_two(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[float, list[tuple[object, ...]]]:
    """Warm time of ``sql`` (best of two runs) and its rows."""
    times, rows = [], []
    for _ in range(2):
        t0 = time.perf_counter()
        rows = con.execute(sql).fetchall()
        times.append(time.perf_counter() - t0)
    return min(times), rows


def store_cost(workdir: Path, n: int) -> dict[str, float]:
    """Seconds to insert and checkpoint one 5-minute day of ``n`` channels, per layout."""
    rng = np.random.default_rng(7)
    kwh = np.round(rng.gamma(2.0, 0.05, (n, 288)), 3)
    start = np.datetime64("2024-08-30T14:00:00", "us")
    per_read = pa.table(
        {
            "channel_id": pa.array(np.repeat(np.arange(1, n + 1, dtype=np.int32), 288)),
            "interval_start": pa.array(
                np.tile(start + np.arange(288) * np.timedelta64(5, "m"), n),
                pa.timestamp("us", "UTC"),
            ),
            "interval_minutes": pa.array(np.full(n * 288, 5, np.int16)),
            "kwh": pa.array(kwh.ravel()),
            "flag_id": pa.array(np.ones(n * 288, np.int16)),
            "version_at": pa.array(np.full(n * 288, start), pa.timestamp("us", "UTC")),
            "file_id": pa.array(np.full(n * 288, 9, np.int64)),
            "source_line": pa.array(np.repeat(np.arange(n, dtype=np.int32) + 3, 288)),
            "is_current": pa.array(np.ones(n * 288, bool)),
        }
    )
    per_day = pa.table(
        {
            "channel_id": pa.array(np.arange(1, n + 1, dtype=np.int32)),
            "market_day": pa.array(np.full(n, np.datetime64("2024-08-31", "D"))),
            "interval_minutes": pa.array(np.full(n, 5, np.int16)),
            "kwh": pa.FixedSizeListArray.from_arrays(pa.array(kwh.ravel()), 288),
            "flag_id": pa.array(np.ones(n, np.int16)),
            "version_at": pa.array(np.full(n, start), pa.timestamp("us", "UTC")),
            "file_id": pa.array(np.full(n, 9, np.int64)),
            "source_line": pa.array(np.arange(n, dtype=np.int32) + 3),
            "is_current": pa.array(np.ones(n, bool)),
        }
    )
    out = {}
    for name, frame in (("per_read", per_read), ("per_day", per_day)):
        path = workdir / f"store_{name}.duckdb"
        path.unlink(missing_ok=True)
        con = duckdb.connect(str(path))
        con.execute("SET TimeZone = 'UTC'")
        con.register("frame", frame)
        con.execute("CREATE TABLE t AS SELECT * FROM frame LIMIT 0")
        t0 = time.perf_counter()
        con.execute("INSERT INTO t SELECT * FROM frame")
        con.execute("CHECKPOINT")
        out[name] = time.perf_counter() - t0
        out[f"{name}_mb"] = path.stat().st_size / 2**20
        con.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=100_000)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/fs-bench-days"))
    ap.add_argument("--reuse", action="store_true", help="reuse the generated month")
    args = ap.parse_args()
    n = args.accounts
    args.workdir.mkdir(parents=True, exist_ok=True)
    store = store_cost(args.workdir, n)
    print(
        f"store one 5-minute day of {n:,} channels ({n * 288:,} reads), insert + checkpoint:\n"
        f"  per read {store['per_read']:.2f} s ({store['per_read_mb']:.0f} MB), "
        f"per day array {store['per_day']:.2f} s ({store['per_day_mb']:.0f} MB)",
        flush=True,
    )
    db = args.workdir / "month.duckdb"
    if not (args.reuse and db.exists()):
        shutil.rmtree(db, ignore_errors=True)
        db.unlink(missing_ok=True)
        con = duckdb.connect(str(db))
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET preserve_insertion_order = false")
        t0 = time.perf_counter()
        con.execute(MONTH_SQL.format(n=n))
        print(f"generated the month in {time.perf_counter() - t0:.0f} s (untimed)", flush=True)
        con.close()
    con = duckdb.connect(str(db))
    con.execute("SET TimeZone = 'UTC'")
    reads = con.execute("SELECT count(*) FROM reads").fetchone()[0]  # type: ignore[index]
    con.execute(MASKS)
    con.execute(RATES)
    timed: dict[str, float] = {}
    results: dict[str, list[tuple[object, ...]]] = {}
    queries: dict[str, str] = {
        "bare_join_per_read": BASELINE,
        "tou_per_read": TOU_READS,
        "tou_per_day": TOU_DAYS,
        "dynamic_per_read": DYN_READS,
        "dynamic_per_day": DYN_DAYS,
        "unnest_one_day": UNNEST_DAY,
    }
    for name, sql in queries.items():
        timed[name], results[name] = best_of_two(con, sql)
        print(f"  {name:<20} {timed[name]:6.2f} s", flush=True)
    con.close()

    def by_channel(rows: list[tuple[object, ...]]) -> dict[object, tuple[float, ...]]:
        return {r[0]: tuple(float(x) for x in r[1:]) for r in rows}  # type: ignore[arg-type]

    def check(a: str, b: str) -> float:
        left, right = by_channel(results[a]), by_channel(results[b])
        assert left.keys() == right.keys()
        return max(abs(x - y) for k, v in left.items() for x, y in zip(v, right[k], strict=True))

    agree = {
        "tou": check("tou_per_read", "tou_per_day"),
        "dynamic": check("dynamic_per_read", "dynamic_per_day"),
    }
    print(
        f"  layouts agree to: TOU {agree['tou']:.1e} kWh, dynamic {agree['dynamic']:.1e} AUD per account"
    )
    pysam_s = pysam_account_year_seconds()
    account_years = n * 30 / 365
    speedup = {k: pysam_s / (v / account_years) for k, v in timed.items() if k != "unnest_one_day"}
    print(
        f"PySAM {pysam_s * 1000:.1f} ms per account-year; x PySAM per account-year: "
        + ", ".join(f"{k} {v:.0f}x" for k, v in speedup.items())
    )
    print(
        json.dumps(
            {
                "bench": "day_arrays",
                "accounts": n,
                "month_reads": reads,
                "store_one_day_s": store,
                "seconds": timed,
                "layouts_agree": agree,
                "pysam_ms_per_account_year": pysam_s * 1000,
                "speedup_vs_pysam": speedup,
            }
        )
    )


if __name__ == "__main__":
    main()
