"""Benchmark: one nightly for N accounts with 5-minute data plus the month-end bill close.

Issue 4 target: the whole nightly within 2x the time of its ingestion stage alone, peak memory
under 4 GiB. Default N = 100,000 accounts: the night's NEM12 file holds 100,000 x 288 = 28.8
million 5-minute readings; the month's earlier 30 days (30-minute reads, 144 million rows) and
prices are preloaded straight into the store and settled as the month's earlier nightlies would
have settled them (wholesale cost and accruals of product charges; not timed), so that the
month-end close bills real months.

Usage::

    uv run python bench/bench_nightly.py [--accounts 100000] [--workdir /tmp/fs-bench-nightly]
        [--reuse] [--no-accruals]

The generated inputs and preloaded store are kept in ``<workdir>.prepared``; ``--reuse`` starts
from them again (the nightly itself always runs on a fresh copy). Prepare again (no ``--reuse``)
after a product file in ``data/products`` changes: the preloaded accruals carry the old product
version, so the close bills that product's accounts by the one-pass run over the month's reads
(2-3 s more in the bill stage, as measured once after a fee correction).

Prints the per-stage wall time and peak memory (the nightly runs in its own process, capped by
``FAIRSHARE_MEMORY_LIMIT``) and one JSON line for machines.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from settlement.billing import load_products  # noqa: E402
from settlement.customers import COLUMNS  # noqa: E402
from settlement.meter_store import append_reads  # noqa: E402
from settlement.nem12_writer import write_nem12  # noqa: E402
from settlement.store import Store  # noqa: E402
from settlement.wholesale import settle_day  # noqa: E402

# The nightly runs as `python -m cli.main` with pandas made unimportable, as in an install without
# the dev group (`uv sync --no-dev`: only nemreader, a test oracle, brings pandas in). DuckDB
# imports pandas, when it can, at its first parameterised query (1.4-1.7 s here), which would
# otherwise land in the timed ingest stage and flatter the nightly / ingestion ratio.
NO_PANDAS = (
    "import runpy, sys; sys.modules['pandas'] = None; sys.argv[0] = 'fairshare'; "
    "runpy.run_module('cli.main', run_name='__main__', alter_sys=True)"
)

DAY = dt.date(2024, 8, 31)
MONTH_START = dt.date(2024, 8, 1)
PRODUCTS = ("sh-tou", "dyn-passthrough", "sh-flat")


def nmi(i: pl.Expr) -> pl.Expr:
    return pl.format("41{}", i.cast(pl.Utf8).str.zfill(8))


def write_customers(path: Path, n: int) -> None:
    idx = pl.int_range(0, n, eager=True)
    frame = pl.DataFrame({"i": idx}).select(
        pl.format("ACC{}", pl.col("i")).alias("account"),
        nmi(pl.col("i")).alias("nmi"),
        pl.lit("NSW1").alias("region"),
        pl.lit("Australia/Sydney").alias("timezone"),
        pl.lit("1.045").alias("dlf"),
        pl.lit("0.995").alias("mlf"),
        pl.lit("monthly").alias("billing_cycle"),
        pl.lit("1").alias("cycle_day"),
        pl.lit("2023-01-01").alias("move_in"),
        pl.lit("").alias("move_out"),
        pl.lit("0").alias("solar_kw"),
        pl.lit("0").alias("battery_kwh"),
        pl.lit("0").alias("battery_kw"),
        pl.lit("0").alias("backup_reserve_pct"),
        pl.lit("false").alias("ev"),
        (pl.col("i") % 7 == 0).cast(pl.Utf8).str.to_lowercase().alias("concession"),
        pl.lit("").alias("vpp_contract"),
        pl.col("i")
        .mod(3)
        .replace_strict(dict(enumerate(PRODUCTS)), return_dtype=pl.Utf8)
        .alias("product"),
        pl.lit("2023-01-01").alias("product_from"),
        pl.lit("").alias("product_to"),
    )
    assert tuple(frame.columns) == COLUMNS
    frame.write_csv(path)


def write_day_meter(path: Path, n: int, rng: np.random.Generator) -> int:
    shape = 0.05 + 0.04 * np.sin(np.linspace(0, 2 * np.pi, 288))
    values = np.round(shape[None, :] * rng.lognormal(0, 0.3, size=(n, 1)), 4)
    frame = pl.DataFrame(
        {
            "nmi": pl.select(nmi(pl.int_range(0, n))).to_series(),
            "suffix": "E1",
            "day": DAY,
            "interval_minutes": 5,
            "values": pl.Series(values).cast(pl.List(pl.Float64)),
            "quality": "A",
            "update_datetime": dt.datetime(2024, 9, 1, 2, 0),
        }
    )
    return write_nem12(frame, path, decimals=4)


def write_day_prices(path: Path) -> None:
    t0 = dt.datetime.combine(DAY, dt.time(0))
    k = np.arange(288)
    rrp = 70 + 50 * np.sin(2 * np.pi * (k / 288 - 0.25))
    rrp[130:160] = -30.0
    rrp[215] = 12500.0
    ends = [t0 + dt.timedelta(minutes=5 * (i + 1)) for i in range(288)]
    pl.DataFrame(
        {
            "REGION": "NSW1",
            "SETTLEMENTDATE": [e.strftime("%Y/%m/%d %H:%M:%S") for e in ends],
            "TOTALDEMAND": 8000.0,
            "RRP": np.round(rrp, 2),
            "PERIODTYPE": "TRADE",
        }
    ).write_csv(path)


def preload_history(db: Path, customers: Path, n: int, accruals: bool = True) -> None:
    """Customers via the real ingestion; the month's 30-minute reads and prices by SQL; its
    first 30 market days settled (wholesale cost and product accruals), as 30 nightlies left
    them."""
    from settlement.customers import ingest_customer_file

    with Store.open(db) as s:
        ingest_customer_file(s, customers)
        fid = s.con.execute(
            "INSERT INTO ingested_files (file_id, kind, path, sha256, size_bytes, ingested_at, "
            "status) VALUES (nextval('file_id_seq'), 'meter', 'preload', 'preload', 0, now(), "
            "'loaded') RETURNING file_id"
        ).fetchall()[0][0]
        start = dt.datetime.combine(
            MONTH_START, dt.time(0), tzinfo=dt.timezone(dt.timedelta(hours=10))
        )
        append_reads(
            s.con,
            """
            SELECT '41' || lpad(a::VARCHAR, 8, '0'), 'E1',
                   $start + to_minutes(30 * k), 30,
                   round(0.3 + 0.25 * sin(k / 7.6 + a % 13) * (1 + (a % 5) / 10), 4), 'A',
                   NULL, NULL, TIMESTAMPTZ '2024-08-31 00:00:00+10', $fid, 0, TRUE
            FROM range($n) t(a), range(48 * 30) u(k)
            """,
            {"start": start, "fid": fid, "n": n},
        )
        pfid = s.con.execute(
            "INSERT INTO ingested_files (file_id, kind, path, sha256, size_bytes, ingested_at, "
            "status) VALUES (nextval('file_id_seq'), 'prices', 'preload', 'preload', 0, now(), "
            "'loaded') RETURNING file_id"
        ).fetchall()[0][0]
        s.con.execute(
            """
            INSERT INTO price_reads_raw
            SELECT 'NSW1', $start + to_minutes(5 * k), 5,
                   round(70 + 50 * sin(2 * pi() * ((k % 288) / 288 - 0.25)), 2), now(), $fid, 0, TRUE
            FROM range(288 * 30) u(k)
            """,
            {"start": start, "fid": pfid},
        )
        # the month's earlier nights settled them, accruals included (the close bills from those)
        # (without accruals, --no-accruals, the close prices the month with the one-pass bill run)
        products = load_products(ROOT / "data" / "products") if accruals else None
        for k in range(30):
            settle_day(s, MONTH_START + dt.timedelta(days=k), "preload", products)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--accounts", type=int, default=100_000)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/fs-bench-nightly"))
    ap.add_argument("--memory-limit", default="3GB")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="start from the prepared store and inbox kept by an earlier run (same --accounts)",
    )
    ap.add_argument(
        "--no-accruals",
        action="store_true",
        help="settle the month's earlier days without accruals: the close then prices every "
        "bill with one pass over the month's reads (the path before schema v8)",
    )
    args = ap.parse_args()
    work: Path = args.workdir
    # the untimed preparation, kept (one per history kind)
    prepared = work.with_name(work.name + (".prepared-noacc" if args.no_accruals else ".prepared"))
    t = time.perf_counter()
    if not (args.reuse and (prepared / "store.duckdb").exists()):
        shutil.rmtree(prepared, ignore_errors=True)
        (prepared / "inbox" / "meter").mkdir(parents=True)
        (prepared / "inbox" / "prices").mkdir(parents=True)
        rng = np.random.default_rng(20240331)
        write_customers(prepared / "customers.csv", args.accounts)
        write_day_meter(prepared / "inbox" / "meter" / "NEM12_day.csv", args.accounts, rng)
        write_day_prices(prepared / "inbox" / "prices" / "PRICE_AND_DEMAND_202408_NSW1.csv")
        preload_history(
            prepared / "store.duckdb", prepared / "customers.csv", args.accounts,
            accruals=not args.no_accruals,
        )  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(prepared, work)
    os.sync()  # the copy's write-back would otherwise land in whichever stage runs then
    readings = 288 * args.accounts
    prep_s = time.perf_counter() - t
    (work / "fairshare.toml").write_text(
        f'[nightly]\ninbox = "inbox"\narchive = "archive"\nruns = "runs"\nproducts = "{ROOT / "data" / "products"}"\n'
    )
    t = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            NO_PANDAS,
            "nightly",
            "--date",
            DAY.isoformat(),
            "--config",
            str(work / "fairshare.toml"),
            "--db",
            str(work / "store.duckdb"),
            "--log-format",
            "json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "FAIRSHARE_MEMORY_LIMIT": args.memory_limit},
    )
    wall = time.perf_counter() - t
    child_peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    finish = [
        json.loads(x) for x in proc.stderr.splitlines() if x.startswith("{") and '"finish"' in x
    ]
    if proc.returncode not in (0, 3) or not finish:
        print(proc.stdout, proc.stderr)
        raise SystemExit(f"nightly failed with exit code {proc.returncode}")
    stages = finish[0]["stages"]
    ingest_s = stages["ingest"]["seconds"]
    # the closing CHECKPOINT is part of the nightly too (timed apart: after the manifest)
    checkpoint_s = float(finish[0].get("checkpoint_seconds", 0.0))
    total_s = sum(s["seconds"] for s in stages.values()) + checkpoint_s
    print(
        f"accounts {args.accounts:,}; night's readings {readings:,}; prep {prep_s:.1f} s (untimed)"
    )
    for name, s in stages.items():
        cpu = s.get("cpu_seconds", 0.0)
        print(
            f"  {name:<8} {s['seconds']:>8.2f} s   CPU {cpu:>6.2f} s ({cpu / s['seconds']:.2f} cores)"
            f"   peak RSS so far {s['peak_rss_mb']:>8.1f} MiB"
        )
    print(f"  {'checkpoint':<8} {checkpoint_s:>8.2f} s   (the run's closing CHECKPOINT)")
    print(
        f"  nightly total {total_s:.2f} s; process wall {wall:.2f} s; peak RSS {child_peak_mb:.0f} MiB"
    )
    print(
        f"  ratio nightly / ingestion = {total_s / ingest_s:.2f} (target <= 2); "
        f"ingestion {readings / ingest_s / 1e6:.2f} M readings/s"
    )
    print(
        json.dumps(
            {
                "bench": "nightly",
                "accounts": args.accounts,
                "readings": readings,
                "stages": stages,
                "checkpoint_s": checkpoint_s,
                "total_s": total_s,
                "wall_s": wall,
                "ratio_to_ingest": total_s / ingest_s,
                "peak_rss_mb": child_peak_mb,
                "exit_code": proc.returncode,
            }
        )
    )


if __name__ == "__main__":
    main()
