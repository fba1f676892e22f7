"""Property tests (hypothesis): random valid NEM12 files round-trip exactly; random corruptions
never crash and never lose a record they did not touch; re-ingestion is a no-op."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from settlement.meter_days import DAYS_MATCH_VALUES_SQL
from settlement.nem12 import ingest_meter_files
from settlement.store import Store

UNITS = {"Wh": ("div", 1000.0), "kWh": ("mul", 1.0), "KWH": ("mul", 1.0), "MWh": ("mul", 1000.0)}
QUALITIES = ["A", "E52", "S53", "F14", "N", "V"]
EVENT_QUALITIES = ["A", "E52", "S14", "F56"]
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass
class Line:
    text: str
    kind: str
    block: int  # index of the 200 block the line belongs to (-1: header/footer)


@dataclass
class Nem12File:
    lines: list[Line] = field(default_factory=list)
    expected: list[tuple[int, tuple[str, str, dt.datetime, float, str]]] = field(
        default_factory=list
    )  # (block, (nmi, suffix, interval_start UTC, kwh, quality+method))
    eol: str = "\n"

    def text(self, lines: list[Line] | None = None) -> str:
        return self.eol.join(ln.text for ln in (self.lines if lines is None else lines)) + self.eol


def _kwh(text: str, unit: str) -> float:
    op, k = UNITS[unit]
    return float(text) / k if op == "div" else float(text) * k


@st.composite
def nem12_files(draw: st.DrawFn) -> Nem12File:
    """A random valid NEM12 file with the readings it must produce."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    f = Nem12File(eol=draw(st.sampled_from(["\n", "\r\n"])))
    header = draw(st.booleans())
    if header:
        f.lines.append(Line("100,NEM12,202401031200,MDP,RET", "100", -1))
    n_channels = draw(st.integers(1, 3))
    nmis = draw(
        st.lists(
            st.text("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789", min_size=10, max_size=10),
            min_size=n_channels,
            max_size=n_channels,
            unique=True,
        )
    )
    for block, nmi in enumerate(nmis):
        suffix = draw(st.sampled_from(["E1", "E2", "B1"]))
        minutes = draw(st.sampled_from([5, 15, 30]))
        unit = draw(st.sampled_from(sorted(UNITS)))
        n = 1440 // minutes
        f.lines.append(
            Line(f"200,{nmi},{suffix},1,{suffix},N1,SER,{unit},{minutes:02d},", "200", block)
        )
        first = dt.date(2023, 1, 1) + dt.timedelta(days=draw(st.integers(0, 800)))
        for d in range(draw(st.integers(1, 3))):
            day = first + dt.timedelta(days=d)
            scale = draw(st.sampled_from([1, 1000]))
            values = [f"{v / scale:.{3 if scale > 1 else 0}f}" for v in rng.integers(0, 5000, n)]
            quality = draw(st.sampled_from(QUALITIES))
            upd = draw(st.sampled_from(["", "20240105103000"]))
            per = [quality] * n
            events: list[str] = []
            if quality == "V":
                cuts = sorted(set(rng.integers(1, n, draw(st.integers(1, 4))).tolist()))
                bounds = [1, *[c + 1 for c in cuts], n + 1]
                for a, b in itertools.pairwise(bounds):
                    q = draw(st.sampled_from(EVENT_QUALITIES))
                    events.append(f"400,{a},{b - 1},{q},,")
                    per[a - 1 : b - 1] = [q] * (b - a)
            f.lines.append(
                Line(
                    ",".join(["300", day.strftime("%Y%m%d"), *values, quality, "", "", upd, ""]),
                    "300",
                    block,
                )
            )
            f.lines += [Line(e, "400", block) for e in events]
            start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC) - dt.timedelta(
                hours=10
            )
            for i, (v, q) in enumerate(zip(values, per, strict=True)):
                f.expected.append(
                    (
                        block,
                        (nmi, suffix, start + dt.timedelta(minutes=i * minutes), _kwh(v, unit), q),
                    )
                )
    if draw(st.booleans()):
        f.lines.append(Line("900", "900", -1))
    return f


def _loaded(
    store: Store, view: str = "meter_reads"
) -> set[tuple[str, str, dt.datetime, float, str]]:
    rows = store.query(
        f"SELECT nmi, suffix, interval_start, kwh, quality || coalesce(method, '') FROM {view}"
    ).fetchall()
    return {(r[0], r[1], r[2].astimezone(dt.UTC), r[3], r[4]) for r in rows}


def _counts(store: Store) -> tuple[int, ...]:
    row = store.query(
        "SELECT (SELECT count(*) FROM meter_reads_raw), (SELECT count(*) FROM quarantine),"
        " (SELECT count(*) FROM ingested_files), (SELECT count(*) FROM meter_reads_raw WHERE is_current)"
    ).fetchone()
    assert row is not None
    return tuple(int(x) for x in row)


@SETTINGS
@given(f=nem12_files())
def test_valid_files_round_trip_exactly(tmp_path: Path, f: Nem12File) -> None:
    path = tmp_path / "rt.csv"
    path.write_bytes(f.text().encode())
    with Store.open(":memory:") as store:
        res = ingest_meter_files(store, [path]).files[0]
        assert res.status == "loaded", (res.errors, res.warnings)
        assert res.rows_quarantined == 0
        assert res.rows_loaded == len(f.expected)
        assert _loaded(store) == {e for _, e in f.expected}
        assert store.query(DAYS_MATCH_VALUES_SQL).fetchall() == []
        # re-ingestion: same bytes -> duplicate; same content re-encoded -> all duplicates
        before = _counts(store)
        again = ingest_meter_files(store, [path]).files[0]
        assert again.status == "duplicate"
        assert _counts(store) == before
        other = tmp_path / "rt2.csv"
        other.write_bytes(f.text().replace(f.eol, "\r\n" if f.eol == "\n" else "\n").encode())
        res2 = ingest_meter_files(store, [other]).files[0]
        assert (res2.rows_loaded, res2.rows_duplicate) == (0, len(f.expected))
        raw, quarantined, files, current = _counts(store)
        assert (raw, quarantined, current) == before[:2] + before[3:] and files == before[2] + 1


CORRUPTIONS = ["delete", "duplicate", "garble", "truncate"]
GARBAGE = ["", "x", "-1", "1e999", "99999999", "V", "A", "300", "400", "200", "20231301", ",,"]


@SETTINGS
@given(f=nem12_files(), kind=st.sampled_from(CORRUPTIONS), data=st.data())
def test_corruption_never_crashes_or_loses_untouched_records(
    tmp_path: Path, f: Nem12File, kind: str, data: st.DataObject
) -> None:
    lines = list(f.lines)
    at = data.draw(st.integers(0, len(lines) - 1), label="line")
    target = lines[at]
    if kind == "delete":
        del lines[at]
        text = f.text(lines)
    elif kind == "duplicate":
        lines.insert(at, target)
        text = f.text(lines)
    elif kind == "garble":
        fields = target.text.split(",")
        k = data.draw(st.integers(0, len(fields) - 1), label="field")
        fields[k] = data.draw(st.sampled_from(GARBAGE), label="garbage")
        lines[at] = Line(",".join(fields), target.kind, target.block)
        text = f.text(lines)
    else:
        full = f.text()
        cut = data.draw(st.integers(0, len(full)), label="cut")
        text = full[:cut]
        # the block being written at the cut is touched
        at = min(full[:cut].count(f.eol), len(f.lines) - 1)
        target = f.lines[at]
    path = tmp_path / "bad.csv"
    path.write_bytes(text.encode())
    with Store.open(":memory:") as store:
        res = ingest_meter_files(store, [path]).files[0]  # must not raise
        assert res.status in ("loaded", "partial", "rejected")
        assert store.query(DAYS_MATCH_VALUES_SQL).fetchall() == []
        if res.status == "rejected":
            assert res.errors and res.errors[0]
            assert _counts(store)[:2] == (0, 1)
            assert (
                "interval data" in res.errors[0]
                or "NEM12" in res.errors[0]
                or "empty" in res.errors[0]
            )
            return
        touched = {target.block}
        if kind == "truncate":
            touched |= {ln.block for ln in f.lines[at:]}
        untouched = {e for b, e in f.expected if b not in touched}
        raw = _loaded(store, "meter_reads_raw")
        missing = untouched - raw
        assert not missing, (kind, target, sorted(missing)[:3])
        q = store.query("SELECT reason FROM quarantine").pl()
        assert q["reason"].is_null().sum() == 0
        assert res.rows_quarantined == q.height
        if res.status == "loaded":
            assert q.height == 0
    _ = pl  # frames used via store.query(...).pl()
