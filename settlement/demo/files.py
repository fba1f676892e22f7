"""Write the demo inbox: AEMO price CSVs, monthly NEM12 meter files and the customer CSV.

All output is byte-deterministic: no clock is read; file creation stamps are derived from the data
(the delivery time of each month's meter data).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from settlement.demo.synth import PricePath
from settlement.nem12_writer import write_nem12

ESTIMATE_QUALITY = "E52"
"""Quality+method written on forward-estimated days (as in AEMO's example files)."""


def write_price_files(
    out_dir: Path, region: str, start: date, minutes: int, path: PricePath
) -> list[Path]:
    """Write AEMO ``PRICE_AND_DEMAND_YYYYMM_<REGION>.csv`` files, one per calendar month.

    SETTLEMENTDATE is interval-ending NEM time (UTC+10) ``YYYY/MM/DD HH:MM:SS``; a month's file
    holds the intervals that start in that month (00:05 on the 1st to 00:00 on the next 1st), as
    AEMO's files do. Returns the paths written.
    """
    first = datetime(start.year, start.month, start.day)
    n = path.price_per_mwh.size
    ending = pl.datetime_range(
        first + timedelta(minutes=minutes),
        first + timedelta(minutes=minutes * n),
        interval=f"{minutes}m",
        eager=True,
    )
    frame = pl.DataFrame(
        {
            "REGION": region,
            "SETTLEMENTDATE": ending.dt.strftime("%Y/%m/%d %H:%M:%S"),
            "TOTALDEMAND": path.demand_mw,
            "RRP": path.price_per_mwh,
            "PERIODTYPE": "TRADE",
            "_month": (ending - timedelta(minutes=minutes)).dt.strftime("%Y%m"),
        }
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for (month,), part in frame.group_by("_month", maintain_order=True):
        target = out_dir / f"PRICE_AND_DEMAND_{month}_{region}.csv"
        part.drop("_month").write_csv(target, float_precision=2, line_terminator="\n")
        written.append(target)
    return written


def write_customer_file(out_dir: Path, rows: pl.DataFrame, name: str = "customers.csv") -> Path:
    """Write the customer CSV (dates ISO, booleans true/false, empty = null)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / name
    rows.write_csv(target, date_format="%Y-%m-%d", line_terminator="\n")
    return target


@dataclass(frozen=True)
class MeterMonth:
    """One month of interval energy for the NEM12 writer.

    Attributes
    ----------
    first_day : the month's first market day.
    day_offset : that day's offset from the demo start (indexes the supply windows).
    import_kwh, export_kwh : ``(households, days, intervals_per_day)`` [kWh].
    delivered_at : UpdateDateTime of this month's 300 records (naive NEM time).
    """

    first_day: date
    day_offset: int
    import_kwh: np.ndarray
    export_kwh: np.ndarray
    delivered_at: datetime


def _wide(
    nmi: np.ndarray,
    suffix: str,
    first_day: date,
    values: np.ndarray,
    keep: np.ndarray,
    quality: np.ndarray,
    minutes: int,
    update: datetime,
) -> pl.DataFrame:
    """The writer's wide frame for the (household, day) cells where ``keep`` holds."""
    rows, days = np.nonzero(keep)
    day = pl.Series("day", np.datetime64(first_day, "D") + days.astype("timedelta64[D]"))
    return pl.DataFrame(
        {
            "nmi": nmi[rows],
            "suffix": suffix,
            "day": day,
            "interval_minutes": minutes,
            "values": pl.Series(values[rows, days]).cast(pl.List(pl.Float64)),
            "quality": quality[rows, days],
            "update_datetime": update,
        }
    )


def month_frames(
    month: MeterMonth,
    nmi: np.ndarray,
    has_export: np.ndarray,
    supplied: np.ndarray,
    estimated: np.ndarray,
    minutes: int,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(frame to write this month, revision frame to append to the next month's file).

    Parameters
    ----------
    has_export : households that get a B1 channel (solar homes).
    supplied : ``(households, days)`` True where the retailer supplies the NMI that day.
    estimated : ``(households, days)`` True where the day is first delivered as a forward
        estimate (the previous day's profile, quality ``E52``) and re-sent as actual later.
    """
    est = estimated & supplied
    quality = np.where(est, ESTIMATE_QUALITY, "A")
    frames, revisions = [], []
    for suffix, actual, rows in (
        ("E1", month.import_kwh, np.ones(nmi.size, dtype=bool)),
        ("B1", month.export_kwh, has_export),
    ):
        like_day = np.concatenate([actual[:, 1:2], actual[:, :-1]], axis=1)
        values = np.where(est[:, :, None], like_day, actual)
        keep = supplied & rows[:, None]
        frames.append(
            _wide(nmi, suffix, month.first_day, values, keep, quality, minutes, month.delivered_at)
        )
        revisions.append(
            _wide(
                nmi,
                suffix,
                month.first_day,
                actual,
                keep & est,
                np.full(est.shape, "A"),
                minutes,
                month.delivered_at,
            )
        )
    return pl.concat(frames), pl.concat(revisions)


def write_meter_file(
    out_dir: Path,
    month: MeterMonth,
    frame: pl.DataFrame,
    revisions_due: pl.DataFrame | None,
    participant: str,
    retailer: str,
) -> tuple[Path, int]:
    """Write one month's NEM12 file; earlier estimated days re-sent as actual (with this file's
    later UpdateDateTime) ride along. Returns the path and the readings written."""
    if revisions_due is not None and revisions_due.height:
        frame = pl.concat(
            [frame, revisions_due.with_columns(pl.lit(month.delivered_at).alias("update_datetime"))]
        )
    stamp = month.first_day.strftime("%Y%m")
    target = out_dir / f"NEM12#DEMO{stamp}#{participant}#{retailer}.csv"
    out_dir.mkdir(parents=True, exist_ok=True)
    count = write_nem12(
        frame,
        target,
        participant_from=participant,
        participant_to=retailer,
        created=month.delivered_at,
        decimals=3,
    )
    return target, count
