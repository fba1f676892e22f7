"""Benchmark: ingest every AEMO PRICE_AND_DEMAND file of ``../shared/data`` into a fresh store.

Run: ``uv run python bench/bench_ingest_prices.py [--db PATH]``. Prints rows, seconds and rows per
second for the first ingest and for the no-op re-ingest; CPU seconds (all threads) too, since wall
time on a shared machine mostly measures the neighbours. The one-off import of pandas that DuckDB
does on its first parameterised query is paid before timing (it is not ingestion work).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from settlement.prices import ingest_price_files
from settlement.store import Store

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FAIRSHARE_SHARED_DATA", REPO.parent / "shared" / "data"))


def main() -> None:
    """Time a cold ingest and a duplicate re-ingest of all PRICE_AND_DEMAND files."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", type=Path, default=None, help="store file (default: temp)")
    args = parser.parse_args()
    folder = SHARED / "prices" / "aemo-price-and-demand"
    if not folder.is_dir():
        raise SystemExit(f"{folder} is absent; nothing to benchmark")
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "bench.duckdb"
        with Store.open(db) as store:
            store.con.execute("SELECT ?", [1]).fetchall()  # warm-up: DuckDB's lazy imports
            for label in ("first ingest", "re-ingest (no-op)"):
                t0, c0 = time.perf_counter(), time.process_time()
                report = ingest_price_files(store, [folder])
                secs, cpu = time.perf_counter() - t0, time.process_time() - c0
                rows = report.rows_loaded
                print(
                    f"{label}: {len(report.files)} files, {rows:,} rows loaded, "
                    f"{report.rows_quarantined} quarantined, {secs:.2f} s wall, {cpu:.2f} s CPU"
                    + (f", {rows / secs:,.0f} rows/s" if rows else "")
                )


if __name__ == "__main__":
    main()
