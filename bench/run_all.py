"""Run every benchmark script under bench/ in turn (``make bench``), each in its own process.

Each script prints a readable summary and one JSON line; this runner only sequences them and
reports which failed. Pass-through: ``python bench/run_all.py -- --accounts 20000`` is not
supported (the scripts take different options); run one script directly to change its size.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ("bench_ingest_meter.py", "bench_ingest_prices.py", "bench_billing.py",
           "bench_nightly.py", "bench_risk.py")  # fmt: skip


def main() -> int:
    """Run the scripts; return the number that failed."""
    failed = []
    for name in SCRIPTS:
        if not (HERE / name).exists():
            continue
        print(f"=== {name}", flush=True)
        t0 = time.perf_counter()
        code = subprocess.call([sys.executable, str(HERE / name)], cwd=HERE.parent)
        print(f"=== {name}: exit {code} in {time.perf_counter() - t0:.1f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print("failed:", ", ".join(failed))
    return len(failed)


if __name__ == "__main__":
    sys.exit(main())
