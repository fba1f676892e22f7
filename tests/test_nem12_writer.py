"""The NEM12 writer: layout, 400 runs, long form, and nemreader reading its output."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from settlement.nem12_writer import write_nem12

UTC = dt.UTC


def _wide() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "nmi": ["NMI0000001", "NMI0000001", "NMI0000002"],
            "suffix": ["E1", "B1", "E1"],
            "day": [dt.date(2024, 1, 1)] * 3,
            "interval_minutes": [30, 30, 30],
            "values": [[1.5] * 48, [0.0] * 48, [0.125] * 48],
            "quality": ["A", "E52", "V"],
            "interval_quality": [None, None, ["A"] * 20 + ["S53"] * 28],
            "update_datetime": [dt.datetime(2024, 1, 2, 3, 4, 5)] * 3,
        }
    )


def test_wide_layout(tmp_path: Path) -> None:
    path = tmp_path / "w.csv"
    n = write_nem12(_wide(), path, decimals=3)
    assert n == 3 * 48
    lines = path.read_text().splitlines()
    assert lines[0] == "100,NEM12,200001010000,FAIRSHARE,FAIRSHARE"
    assert lines[-1] == "900"
    kinds = [ln.split(",")[0] for ln in lines]
    assert kinds == ["100", "200", "300", "200", "300", "200", "300", "400", "400", "900"]
    assert lines[1] == "200,NMI0000001,B1E1,B1,B1,N1,,kWh,30,"
    r300 = lines[6].split(",")
    assert r300[1] == "20240101" and r300[2] == "0.125" and len(r300) == 2 + 48 + 5
    assert r300[50:] == ["V", "", "", "20240102030405", ""]
    assert lines[7:9] == ["400,1,20,A,,", "400,21,48,S53,,"]


def test_long_form_splits_days_in_market_time(tmp_path: Path) -> None:
    t0 = dt.datetime(2023, 12, 31, 14, tzinfo=UTC)  # 2024-01-01 00:00 market time
    long = pl.DataFrame(
        {
            "nmi": ["X"] * 96,
            "suffix": ["E1"] * 96,
            "interval_start": [t0 + dt.timedelta(minutes=15 * i) for i in range(96)],
            "interval_minutes": [15] * 96,
            "kwh": [i / 10 for i in range(96)],
            "quality": ["A"] * 50 + ["E"] * 46,
            "method": [None] * 50 + ["52"] * 46,
        }
    )
    path = tmp_path / "l.csv"
    assert write_nem12(long, path, header=False, footer=False, line_ending="\r\n") == 96
    text = path.read_bytes().decode()
    assert text.count("\r\n") == 4
    lines = text.splitlines()
    assert lines[1].startswith("300,20240101,0.0,0.1,0.2,")
    assert lines[2:] == ["400,1,50,A,,", "400,51,96,E52,,"]


def test_incomplete_day_is_refused(tmp_path: Path) -> None:
    bad = _wide().with_columns(pl.col("values").list.head(47))
    with pytest.raises(ValueError, match="47 values for 30-minute"):
        write_nem12(bad, tmp_path / "x.csv")


def test_nemreader_reads_writer_output(tmp_path: Path) -> None:
    nemreader = pytest.importorskip("nemreader")
    path = tmp_path / "w.csv"
    write_nem12(_wide(), path)
    data = nemreader.NEMFile(str(path), strict=True).nem_data()
    reads = data.readings["NMI0000002"]["E1"]
    assert len(reads) == 48
    assert reads[0].read_value == 0.125 and reads[0].quality_method == "A"
    assert reads[-1].quality_method == "S53"
    assert reads[0].t_start == dt.datetime(2024, 1, 1)
