"""Property tests: generic price CSVs round-trip; corrupted lines never cost a good row."""

from __future__ import annotations

import datetime as dt
import tempfile
import zoneinfo
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from settlement.prices import NEM_REGIONS, ingest_price_files
from settlement.store import Store

ZONES = ("Etc/GMT-10", "Europe/London", "UTC", "Australia/Sydney", "America/New_York")
EPOCH = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
HOURS = 5 * 365 * 24  # interval ends fall in 2020-2024: every NEM cap is >= 14,700 $/MWh
# clock changes (UTC) of the zones above, so runs often cross a daylight-saving transition
TRANSITIONS = tuple(
    dt.datetime(*t, tzinfo=dt.UTC)
    for t in [
        (2023, 3, 26, 1),
        (2023, 10, 29, 1),
        (2023, 4, 1, 16),
        (2023, 9, 30, 16),
        (2023, 3, 12, 7),
        (2023, 11, 5, 6),
    ]
)
TEXT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz!?#;:' ", min_size=1, max_size=12)
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Row:
    region: str
    end: dt.datetime  # UTC
    minutes: int
    price: float


@st.composite
def series(draw: st.DrawFn, contiguous: bool) -> list[Row]:
    """Rows of a few regions: each a run of intervals of one length, chronological."""
    rows = []
    for region in draw(st.lists(st.sampled_from(NEM_REGIONS), min_size=1, max_size=3, unique=True)):
        minutes = draw(st.sampled_from([5, 15, 30, 60]))
        near_change = draw(st.sampled_from(TRANSITIONS)) - dt.timedelta(
            hours=draw(st.integers(0, 3))
        )
        anywhere = EPOCH + dt.timedelta(hours=draw(st.integers(1, HOURS)))
        end = draw(st.sampled_from([near_change, anywhere]))
        for _ in range(draw(st.integers(2, 25))):
            price = round(draw(st.floats(-1000, 14_700, allow_nan=False)), 2)
            rows.append(Row(region, end, minutes, price))
            skip = 1 if contiguous else draw(st.integers(1, 3))
            end += dt.timedelta(minutes=minutes * skip)
    return rows


def render(row: Row, zone: str, style: str, with_minutes: bool, order: list[str]) -> str:
    local = row.end.astimezone(zoneinfo.ZoneInfo(zone))
    if style == "naive":
        end = local.strftime("%Y-%m-%d %H:%M")
    elif style == "offset":
        end = local.isoformat(timespec="seconds")
    else:
        end = row.end.strftime("%Y-%m-%dT%H:%M:%SZ")
    values = {"region": row.region, "interval_end": end, "price_per_mwh": repr(row.price)}
    if with_minutes:
        values["interval_minutes"] = str(row.minutes)
    return ",".join(values[c] for c in order)


def header(draw: st.DrawFn, with_minutes: bool) -> list[str]:
    cols = ["region", "interval_end", "price_per_mwh"] + (["interval_minutes"] * with_minutes)
    return draw(st.permutations(cols))


def stored(store: Store) -> set[tuple[str, dt.datetime, int, float]]:
    rows = store.query(
        "SELECT region, interval_start, interval_minutes, price_per_mwh FROM price_reads_raw"
    ).fetchall()
    return {(r, s, int(m), p) for r, s, m, p in rows}


def expected(rows: list[Row]) -> set[tuple[str, dt.datetime, int, float]]:
    return {(r.region, r.end - dt.timedelta(minutes=r.minutes), r.minutes, r.price) for r in rows}


def once_in_repeated_hour(rows: list[Row], zone: str) -> list[Row]:
    """Rows whose local end time occurs twice on the clock but once in the file (its region)."""
    tz = zoneinfo.ZoneInfo(zone)
    local = [(r, r.end.astimezone(tz).replace(tzinfo=None)) for r in rows]
    counts = Counter((r.region, t) for r, t in local)
    return [
        r
        for r, t in local
        if counts[(r.region, t)] == 1
        and t.replace(tzinfo=tz, fold=0).utcoffset() != t.replace(tzinfo=tz, fold=1).utcoffset()
    ]


@SETTINGS
@given(data=st.data())
def test_generic_csv_round_trips(data: st.DataObject) -> None:
    with_minutes = data.draw(st.booleans(), "with_minutes")
    rows = data.draw(series(contiguous=not with_minutes), "rows")
    zone = data.draw(st.sampled_from(ZONES), "zone")
    style = data.draw(st.sampled_from(["naive", "offset", "utc"]), "style")
    order = header(data.draw, with_minutes)
    lines = [",".join(order)] + [render(r, zone, style, with_minutes, order) for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "prices.csv"
        path.write_text("\n".join(lines) + "\n")
        with Store.open(":memory:") as store:
            report = ingest_price_files(store, [path], generic_timezone=zone)
            result = report.files[0]
            assert result.status == "loaded", result.errors
            assert result.rows_loaded == len(rows)
            guessed = once_in_repeated_hour(rows, zone) if style == "naive" else []
            if guessed:  # read as the first pass by convention, and said so
                assert any("repeated local hour" in w for w in result.warnings)
                sure = [r for r in rows if r not in guessed]
                assert expected(sure) <= stored(store)
            else:
                assert stored(store) == expected(rows)
            assert ingest_price_files(store, [path]).files[0].status == "duplicate"


CORRUPTIONS = ("date", "price", "region", "minutes", "short", "long", "garbage", "blank")


def corrupt(line: str, order: list[str], how: str, text: str) -> str:
    fields = line.split(",")
    if how in ("date", "price", "region", "minutes"):
        name = {"date": "interval_end", "price": "price_per_mwh"}.get(how, how)
        name = "interval_minutes" if how == "minutes" else name
        fields[order.index(name)] = text
    elif how == "short":
        fields = fields[:-1]
    elif how == "long":
        fields.append(text)
    elif how == "garbage":
        return text
    return ",".join(fields)


@SETTINGS
@given(data=st.data())
def test_corrupted_lines_never_cost_a_good_row(data: st.DataObject) -> None:
    rows = data.draw(series(contiguous=False), "rows")
    zone = data.draw(st.sampled_from(ZONES), "zone")
    order = header(data.draw, True)
    bad_at = data.draw(st.sets(st.integers(0, len(rows) - 1), max_size=len(rows)), "bad rows")
    lines, good, corrupted_lines = [",".join(order)], [], set()
    for i, row in enumerate(rows):
        line = render(row, zone, "offset", True, order)
        if i in bad_at:
            how = data.draw(st.sampled_from(CORRUPTIONS), f"corruption {i}")
            if how == "blank":
                lines.append("")  # a blank line is skipped, not an error
                continue
            line = corrupt(line, order, how, data.draw(TEXT, f"text {i}"))
            corrupted_lines.add(len(lines) + 1)
        else:
            good.append(row)
        lines.append(line)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corrupt.csv"
        path.write_text("\n".join(lines) + "\n")
        with Store.open(":memory:") as store:
            result = ingest_price_files(store, [path], generic_timezone=zone).files[0]
            assert result.status in ("loaded", "partial", "rejected")
            assert expected(good) <= stored(store)  # every good row is loaded
            bad_lines = {
                line for (line,) in store.query("SELECT source_line FROM quarantine").fetchall()
            }
            assert bad_lines <= corrupted_lines  # only corrupted lines are quarantined
            if result.status != "rejected":
                assert bad_lines == corrupted_lines
                assert result.rows_loaded + result.rows_quarantined == len(good) + len(bad_lines)
