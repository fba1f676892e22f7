"""A tiny retailer written as real input files (NEM12, AEMO prices, customers) for nightly tests."""

from __future__ import annotations

import datetime as dt
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from settlement.audits import Audit
from settlement.customers import COLUMNS
from settlement.nem12_writer import write_nem12

START = dt.date(2024, 7, 1)
DAYS = 31
ACCOUNTS = ("A1", "A2", "A3")
NMIS = {a: f"41020000{i:02d}" for i, a in enumerate(ACCOUNTS, 1)}


def customers_csv(path: Path) -> Path:
    rows = [
        f"{a},{NMIS[a]},NSW1,Australia/Sydney,1.04,0.99,monthly,1,2024-06-01,,{5 if a != 'A3' else 0},0,0,0,false,false,,{p},2024-06-01,"
        for a, p in zip(ACCOUNTS, ("sh-flat", "dyn-passthrough", "sh-tou"), strict=True)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(",".join(COLUMNS) + "\n" + "\n".join(rows) + "\n")
    return path


def meter_frame(days: int = DAYS, start: dt.date = START, bump: float = 0.0) -> pl.DataFrame:
    """Wide NEM12 frame: E1 for every account, B1 for the solar ones; deterministic shapes."""
    rows = []
    for i, acct in enumerate(ACCOUNTS):
        for d in range(days):
            day = start + dt.timedelta(days=d)
            e1 = [
                round(0.2 + 0.1 * i + 0.3 * (1 + math.sin((k + day.toordinal()) / 7)) + bump, 3)
                for k in range(48)
            ]
            rows.append((NMIS[acct], "E1", day, 30, e1, "A", dt.datetime(2024, 8, 2, 0, 0)))
            if acct != "A3":
                b1 = [
                    round(max(0.0, 1.2 * math.sin(math.pi * (k - 12) / 24)), 3)
                    if 12 <= k < 36
                    else 0.0
                    for k in range(48)
                ]
                rows.append((NMIS[acct], "B1", day, 30, b1, "A", dt.datetime(2024, 8, 2, 0, 0)))
    return pl.DataFrame(
        rows,
        schema={
            "nmi": pl.Utf8,
            "suffix": pl.Utf8,
            "day": pl.Date,
            "interval_minutes": pl.Int64,
            "values": pl.List(pl.Float64),
            "quality": pl.Utf8,
            "update_datetime": pl.Datetime("us"),
        },
        orient="row",
    )


def price_csv(path: Path, days: int = DAYS, start: dt.date = START) -> Path:
    """AEMO PRICE_AND_DEMAND file, 5-minute, interval-ending NEM time, with a spike and negatives."""
    lines = ["REGION,SETTLEMENTDATE,TOTALDEMAND,RRP,PERIODTYPE"]
    t0 = dt.datetime.combine(start, dt.time(0))
    for k in range(days * 288):
        end = t0 + dt.timedelta(minutes=5 * (k + 1))
        hour = (k % 288) / 12
        rrp = 60 + 40 * math.sin(2 * math.pi * (hour - 6) / 24)
        if 11 <= hour < 14:
            rrp = -25.5
        if k % 288 == 222:
            rrp = 9500.0
        lines.append(f"NSW1,{end:%Y/%m/%d %H:%M:%S},7000.5,{rrp:.2f},TRADE")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def build_inbox(root: Path) -> Path:
    """Write inbox/{customers,prices,meter} under root; return the settings file path."""
    inbox = root / "inbox"
    customers_csv(inbox / "customers" / "customers.csv")
    price_csv(inbox / "prices" / "PRICE_AND_DEMAND_202407_NSW1.csv")
    write_nem12(meter_frame(), inbox / "meter" / "NEM12_retailer_202407.csv")
    cfg = root / "fairshare.toml"
    cfg.write_text(
        '[nightly]\ninbox = "inbox"\narchive = "archive"\nruns = "runs"\n'
        f'products = "{Path(__file__).resolve().parents[1] / "data" / "products"}"\n'
    )
    return cfg


def nightly_cli(
    root: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `fairshare nightly ARGS` on ``root``'s config and store in a fresh process (so
    SIGKILL is real), with ``env`` over this process's environment less any failpoint."""
    base = {k: v for k, v in os.environ.items() if k != "FAIRSHARE_FAILPOINT"}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "nightly", "--config", str(root / "fairshare.toml"),
         "--db", str(root / "store.duckdb"), *args],
        capture_output=True, text=True, timeout=300,
        cwd=Path(__file__).resolve().parents[1], env={**base, **(env or {})},
    )  # fmt: skip


@contextmanager
def added_audit(audits: list[Audit], audit: Audit) -> Iterator[None]:
    """``audit`` in ``audits`` (``settlement.audits.AUDITS`` or ``BILL_AUDITS``) for the block
    only: a test's way to make a run's audit fail."""
    audits.append(audit)
    try:
        yield
    finally:
        audits.remove(audit)
