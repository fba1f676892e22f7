"""Benchmark: NEM12 ingestion throughput and peak memory, against nemreader.

Generates a synthetic 5-minute NEM12 file (default 120 NMIs x 292 days = 35,040 300-lines,
10,091,520 readings) with :func:`settlement.nem12_writer.write_nem12`, then in separate child
processes (so each peak RSS is its own):

1. ingests it into a fresh DuckDB file with ``settlement.nem12.ingest_meter_files``, then a
   revision of every day (new values, later UpdateDateTime) into the same store (the exact
   duplicate / supersede path, which every record of a revision takes);
2. parses a leading sample of it with nemreader 0.9.2 (``NEMFile.nem_data``), extrapolated
   linearly to the whole file (nemreader builds one Python object per reading, so a full run
   needs several GB and minutes; the sample size is printed). The extrapolation was checked
   once against the whole file (2026-11-24): 0.269 M readings/s over all 10.1 M readings in
   37.5 s with a 2.7 GB peak, against 0.283 M/s on the sample, so nemreader's rate does not
   fall with the file's size and the sample flatters it by about 5%.

Prints one JSON line (machine-readable) and a readable summary. Usage::

    uv run python bench/bench_ingest_meter.py [--nmis 120] [--days 292] [--sample-lines 3504]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from settlement.nem12_writer import write_nem12  # noqa: E402

HWM = """
def hwm_kb():
    # VmHWM (peak RSS of this process image); ru_maxrss would include the parent's peak at fork
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
"""

CHILD_OURS = """
import json, resource, sys, time
import pyarrow  # noqa: F401  (imported before timing, as the CLI has it loaded)
sys.path.insert(0, {repo!r})
from settlement.nem12 import ingest_meter_files
from settlement.store import Store
{hwm}
store = Store.open({db!r})  # fresh file, migrated: not timed (the store exists before ingest)
ru0 = resource.getrusage(resource.RUSAGE_SELF)
cpu0 = ru0.ru_utime + ru0.ru_stime
t0 = time.perf_counter()
rep = ingest_meter_files(store, [{path!r}])
store.close()  # timed: includes the final checkpoint
secs = time.perf_counter() - t0
ru = resource.getrusage(resource.RUSAGE_SELF)
store = Store.open({db!r}, read_only=True)
n = store.con.execute("SELECT count(*) FROM meter_reads_raw").fetchone()[0]
cur = store.con.execute("SELECT count(*) FROM meter_reads").fetchone()[0]
store.close()
f = rep.files[0]
print(json.dumps(dict(secs=secs, rows=n, current=cur, status=f.status, loaded=f.rows_loaded,
     cpu_secs=ru.ru_utime + ru.ru_stime - cpu0, maxrss_kb=hwm_kb())))
"""

CHILD_PARSE = """
import json, resource, sys, time
sys.path.insert(0, {repo!r})
from settlement.nem12 import _chunks
from settlement.nem12_parse import StreamState, parse_chunk
{hwm}
ru0 = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.perf_counter()
state, n = StreamState(), 0
with open({path!r}, "rb") as fh:
    for text, first, _ in _chunks(fh, 2 << 20):
        n += parse_chunk(text, first, state)[0].values.height
secs = time.perf_counter() - t0
ru = resource.getrusage(resource.RUSAGE_SELF)
cpu = ru.ru_utime + ru.ru_stime - ru0.ru_utime - ru0.ru_stime
print(json.dumps(dict(secs=secs, rows=n, cpu_secs=cpu, maxrss_kb=hwm_kb())))
"""

CHILD_NEMREADER = """
import json, resource, sys, time, logging
logging.disable(logging.CRITICAL)
import nemreader
{hwm}
ru0 = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.perf_counter()
data = nemreader.NEMFile({path!r}, strict=False).nem_data()
n = sum(len(r) for ch in data.readings.values() for r in ch.values())
secs = time.perf_counter() - t0
ru = resource.getrusage(resource.RUSAGE_SELF)
cpu = ru.ru_utime + ru.ru_stime - ru0.ru_utime - ru0.ru_stime
print(json.dumps(dict(secs=secs, rows=n, cpu_secs=cpu, maxrss_kb=hwm_kb())))
"""


def make_file(
    path: Path, nmis: int, days: int, seed: int = 20240101, updated: date = date(2024, 12, 31)
) -> int:
    """Write the synthetic file (every day stamped ``updated``); return the number of readings."""
    rng = np.random.default_rng(seed)
    n = nmis * days
    frame = pl.DataFrame(
        {
            "nmi": np.repeat([f"NMI{i:07d}" for i in range(nmis)], days),
            "day": np.tile(np.arange(days), nmis),
        }
    ).with_columns(
        (pl.lit(date(2024, 1, 1)) + pl.duration(days=pl.col("day"))).alias("day"),
        pl.lit("E1").alias("suffix"),
        pl.lit(5).alias("interval_minutes"),
        pl.lit("A").alias("quality"),
        pl.Series("values", np.round(rng.gamma(2.0, 0.05, (n, 288)), 3)),
        pl.lit(updated).cast(pl.Datetime("us")).alias("update_datetime"),
    )
    return write_nem12(frame, path)


def run_child(code: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=REPO
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nmis", type=int, default=120)
    ap.add_argument("--days", type=int, default=292)
    ap.add_argument("--sample-lines", type=int, default=3504, help="nemreader sample (300 lines)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_nem12_") as tmp:
        tmpdir = Path(tmp)
        path = tmpdir / "bench.csv"
        t0 = time.perf_counter()
        readings = make_file(path, args.nmis, args.days)
        write_secs = time.perf_counter() - t0
        size = path.stat().st_size
        load_before = os.getloadavg()
        ours = run_child(
            CHILD_OURS.format(repo=str(REPO), db=str(tmpdir / "b.duckdb"), path=str(path), hwm=HWM)
        )
        # a revision of every day (new values, later UpdateDateTime) into the same store: every
        # record meets a stored day, so all of it takes the exact supersede path
        revised = tmpdir / "revised.csv"
        make_file(revised, args.nmis, args.days, seed=7, updated=date(2025, 1, 31))
        rev = run_child(
            CHILD_OURS.format(
                repo=str(REPO), db=str(tmpdir / "b.duckdb"), path=str(revised), hwm=HWM
            )
        )
        revised.unlink()
        parse = run_child(CHILD_PARSE.format(repo=str(REPO), path=str(path), hwm=HWM))
        # nemreader on the first sample_lines 300 records (one 200 block prefix), extrapolated
        sample = tmpdir / "sample.csv"
        with path.open() as src, sample.open("w") as dst:
            n300 = 0
            for line in src:
                if line.startswith("300"):
                    if n300 >= args.sample_lines:
                        break
                    n300 += 1
                dst.write(line)
            dst.write("900\n")
        ref = run_child(CHILD_NEMREADER.format(path=str(sample), hwm=HWM))
        load_after = os.getloadavg()
    ours_rate = readings / ours["secs"]
    ref_rate = ref["rows"] / ref["secs"]
    # in-memory size of the file's readings as a frame of meter_reads_raw rows (polars estimate)
    bytes_per_row = 10 + 2 + 8 + 2 + 8 + 1 + 0 + 0 + 8 + 8 + 4 + 1 + 3 * 16  # strings + offsets
    frame_mb = readings * bytes_per_row / 2**20
    result = {
        "bench": "ingest_meter",
        "readings": readings,
        "file_mb": round(size / 2**20, 1),
        "write_secs": round(write_secs, 2),
        "ingest_secs": round(ours["secs"], 2),
        "readings_per_sec": round(ours_rate),
        "ingest_cpu_secs": round(ours["cpu_secs"], 2),
        "readings_per_cpu_sec": round(readings / ours["cpu_secs"]),
        "peak_rss_mb": round(ours["maxrss_kb"] / 1024),
        "frame_in_memory_mb_est": round(frame_mb),
        "rows_stored": ours["rows"],
        "status": ours["status"],
        "revision_secs": round(rev["secs"], 2),
        "revision_readings_per_sec": round(readings / rev["secs"]),
        "revision_rows_stored": rev["rows"],
        "revision_rows_current": rev["current"],
        "parse_only_secs": round(parse["secs"], 2),
        "parse_only_cpu_secs": round(parse["cpu_secs"], 2),
        "parse_only_readings_per_sec": round(readings / parse["secs"]),
        "parse_only_speedup_vs_nemreader": round((readings / parse["secs"]) / ref_rate, 1),
        "nemreader_sample_readings": ref["rows"],
        "nemreader_secs_sample": round(ref["secs"], 2),
        "nemreader_readings_per_sec": round(ref_rate),
        "nemreader_secs_extrapolated": round(readings / ref_rate, 1),
        "nemreader_peak_rss_mb_sample": round(ref["maxrss_kb"] / 1024),
        "speedup_vs_nemreader": round(ours_rate / ref_rate, 1),
        "nemreader_readings_per_cpu_sec": round(ref["rows"] / ref["cpu_secs"]),
        "speedup_vs_nemreader_cpu": round(
            (readings / ours["cpu_secs"]) / (ref["rows"] / ref["cpu_secs"]), 1
        ),
        "cpus": os.cpu_count(),
        "loadavg_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
    }
    print(json.dumps(result))
    print(
        f"\nNEM12 ingestion benchmark: {readings:,} 5-minute readings "
        f"({size / 2**20:.0f} MB file, written in {write_secs:.1f} s)\n"
        f"  fairshare : {ours['secs']:.2f} s -> {ours_rate / 1e6:.2f} M readings/s, "
        f"peak RSS {ours['maxrss_kb'] / 1024:.0f} MB (readings as an in-memory frame ~{frame_mb:.0f} MB)\n"
        f"              CPU {ours['cpu_secs']:.1f} s -> {readings / ours['cpu_secs'] / 1e6:.2f} M readings per CPU-second\n"
        f"  revision  : every day again, later UpdateDateTime (exact path): {rev['secs']:.2f} s -> "
        f"{readings / rev['secs'] / 1e6:.2f} M readings/s; stored {rev['rows']:,}, current {rev['current']:,}\n"
        f"  parse only (no store; like nemreader): {parse['secs']:.2f} s, CPU {parse['cpu_secs']:.1f} s -> "
        f"{readings / parse['secs'] / 1e6:.2f} M readings/s ({(readings / parse['secs']) / ref_rate:.0f}x nemreader)\n"
        f"  nemreader : {ref['rows']:,}-reading sample in {ref['secs']:.2f} s -> "
        f"{ref_rate / 1e6:.3f} M readings/s (whole file extrapolated: {readings / ref_rate:.0f} s), "
        f"sample peak RSS {ref['maxrss_kb'] / 1024:.0f} MB\n"
        f"  speed-up  : {ours_rate / ref_rate:.1f}x wall, "
        f"{(readings / ours['cpu_secs']) / (ref['rows'] / ref['cpu_secs']):.1f}x per CPU-second   "
        f"(load average before/after {load_before[0]:.2f}/{load_after[0]:.2f} on {os.cpu_count()} CPUs)"
    )
    _ = resource  # children report their own getrusage


if __name__ == "__main__":
    main()
