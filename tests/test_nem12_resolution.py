"""NEM12 revisions that change the interval length of a day (5-minute <-> 30-minute).

A newer version of a channel's day supersedes every older reading of the channel whose time span
``[interval_start, interval_start + interval_minutes)`` overlaps one of its readings, not only
the readings that start at the same instant; an older version arriving late stays superseded
wherever a newer overlapping reading exists (``data/formats/nem12.md``, "Versions").

The values are exact binary fractions, so the daily sums below are exact: a 5-minute day of
0.125 kWh is 288 x 0.125 = 36.0 kWh, a 30-minute day of 0.5 kWh is 48 x 0.5 = 24.0 kWh, of
0.25 kWh 48 x 0.25 = 12.0 kWh, a 15-minute day of 0.375 kWh 96 x 0.375 = 36.0 kWh.
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import pytest

from settlement.meter_days import DAYS_MATCH_VALUES_SQL
from settlement.nem12 import ingest_meter_files
from settlement.store import Store

H100 = "100,NEM12,202401031200,MDP,RET"
NMI = "NMI0000001"


def b200(minutes: int, nmi: str = NMI) -> str:
    return f"200,{nmi},E1,E1,E1,N1,SER1,kWh,{minutes},"


def r300(day: str, minutes: int, value: str, updated: str, quality: str = "A") -> str:
    return ",".join(["300", day, *[value] * (1440 // minutes), f"{quality},,,{updated},"])


def nem(tmp_path: Path, name: str, *blocks: tuple[int, list[str]], header: str = H100) -> Path:
    """A NEM12 file: ``blocks`` are (interval length, 300 lines) under one 200 record each."""
    lines = [header]
    for minutes, recs in blocks:
        lines += [b200(minutes), *recs]
    p = tmp_path / name
    p.write_text("\n".join([*lines, "900"]) + "\n")
    return p


def per_day(store: Store) -> list[tuple[dt.date, int, int, float]]:
    """Current readings per market day and interval length: (day, minutes, count, kWh)."""
    rows = store.query(
        "SELECT (interval_start AT TIME ZONE 'Etc/GMT-10')::DATE AS day, interval_minutes,"
        " count(*), sum(kwh) FROM meter_reads GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    return [(d, int(m), int(n), float(k)) for d, m, n, k in rows]


def no_overlap(store: Store) -> bool:
    """No two current readings of a channel overlap in time."""
    row = store.query(
        "SELECT count(*) FROM (SELECT interval_start, lag(interval_start"
        " + INTERVAL 1 MINUTE * interval_minutes) OVER (PARTITION BY channel_id"
        " ORDER BY interval_start) AS prev_end FROM meter_values WHERE is_current)"
        " WHERE prev_end > interval_start"
    ).fetchone()
    return row is not None and row[0] == 0


D1, D2 = dt.date(2024, 1, 1), dt.date(2024, 1, 2)


def test_5_minute_day_revised_at_30_minutes(store: Store, tmp_path: Path) -> None:
    """1 and 2 Jan at 5 minutes (0.125: 36.0 kWh each), then 1 Jan revised at 30 minutes (0.5,
    later UpdateDateTime): 1 Jan = 48 x 0.5 = 24.0 kWh, all 288 5-minute reads superseded (not
    only the 48 on a half hour: 24.0 + 240 x 0.125 = 54.0 was the bug); 2 Jan untouched, 36.0."""
    v1 = r300("20240101", 5, "0.125", "20240103000000")
    ingest_meter_files(
        store, [nem(tmp_path, "a.csv", (5, [v1, r300("20240102", 5, "0.125", "20240103000000")]))]
    )
    ingest_meter_files(
        store, [nem(tmp_path, "b.csv", (30, [r300("20240101", 30, "0.5", "20240104000000")]))]
    )
    assert per_day(store) == [(D1, 30, 48, 24.0), (D2, 5, 288, 36.0)]
    assert no_overlap(store)
    raw = store.query("SELECT count(*) FROM meter_values").fetchone()
    assert raw == (288 * 2 + 48,)  # every version kept


def test_30_minute_day_revised_at_5_minutes(store: Store, tmp_path: Path) -> None:
    """1 Jan at 30 minutes (0.5: 24.0 kWh), then at 5 minutes (0.125, later UpdateDateTime):
    1 Jan = 288 x 0.125 = 36.0 kWh, no 30-minute read current."""
    ingest_meter_files(
        store, [nem(tmp_path, "a.csv", (30, [r300("20240101", 30, "0.5", "20240103000000")]))]
    )
    ingest_meter_files(
        store, [nem(tmp_path, "b.csv", (5, [r300("20240101", 5, "0.125", "20240104000000")]))]
    )
    assert per_day(store) == [(D1, 5, 288, 36.0)]
    assert no_overlap(store)


@pytest.mark.parametrize(
    ("newer", "older", "want"),
    [
        # 5-minute 0.125 newer, 30-minute 0.5 older arriving later: 288 x 0.125 = 36.0 stays
        ((5, "0.125"), (30, "0.5"), (D1, 5, 288, 36.0)),
        # 30-minute 0.5 newer, 5-minute 0.125 older arriving later: 48 x 0.5 = 24.0 stays
        ((30, "0.5"), (5, "0.125"), (D1, 30, 48, 24.0)),
    ],
)
def test_older_version_of_other_length_arriving_late_stays_superseded(
    store: Store,
    tmp_path: Path,
    newer: tuple[int, str],
    older: tuple[int, str],
    want: tuple[dt.date, int, int, float],
) -> None:
    """The newer version (UpdateDateTime 4 Jan) first, then an older one (2 Jan) of the other
    interval length: the older one is stored but none of its readings is current."""
    (nm, nv), (om, ov) = newer, older
    ingest_meter_files(
        store, [nem(tmp_path, "a.csv", (nm, [r300("20240101", nm, nv, "20240104000000")]))]
    )
    res = ingest_meter_files(
        store, [nem(tmp_path, "b.csv", (om, [r300("20240101", om, ov, "20240102000000")]))]
    ).files[0]
    assert (res.status, res.rows_loaded) == ("loaded", 1440 // om)
    assert per_day(store) == [want]
    assert no_overlap(store)


def test_late_version_between_two_lengths(store: Store, tmp_path: Path) -> None:
    """5-minute v1 (0.125), 30-minute v3 (0.5), then 5-minute v2 (0.25, older than v3 but newer
    than v1) arriving last: v3 stays current alone, 48 x 0.5 = 24.0 kWh. (Per start, 240 of
    v2's readings meet no current reading with their start; they must still lose to v3.)"""
    ingest_meter_files(
        store, [nem(tmp_path, "a.csv", (5, [r300("20240101", 5, "0.125", "20240102000000")]))]
    )
    ingest_meter_files(
        store, [nem(tmp_path, "b.csv", (30, [r300("20240101", 30, "0.5", "20240104000000")]))]
    )
    ingest_meter_files(
        store, [nem(tmp_path, "c.csv", (5, [r300("20240101", 5, "0.25", "20240103000000")]))]
    )
    assert per_day(store) == [(D1, 30, 48, 24.0)]
    assert no_overlap(store)


def test_both_lengths_of_a_day_in_one_file(store: Store, tmp_path: Path) -> None:
    """One file holding 1 Jan at 5 minutes (0.125, UpdateDateTime 2 Jan) then at 30 minutes
    (0.5, 3 Jan): the newer 30-minute version is current, 24.0 kWh. A second file with the same
    two versions in the other order of lines changes nothing (every reading a duplicate). With
    equal UpdateDateTimes the later line wins: 2 Jan 30-minute (0.25) before 5-minute (0.375):
    288 x 0.375 = 108.0 kWh."""
    five = r300("20240101", 5, "0.125", "20240102000000")
    thirty = r300("20240101", 30, "0.5", "20240103000000")
    ingest_meter_files(store, [nem(tmp_path, "a.csv", (5, [five]), (30, [thirty]))])
    assert per_day(store) == [(D1, 30, 48, 24.0)]
    res = ingest_meter_files(store, [nem(tmp_path, "b.csv", (30, [thirty]), (5, [five]))]).files[0]
    assert (res.rows_loaded, res.rows_duplicate) == (0, 336)
    assert per_day(store) == [(D1, 30, 48, 24.0)]
    same = "20240105000000"
    ingest_meter_files(
        store,
        [
            nem(
                tmp_path,
                "c.csv",
                (30, [r300("20240102", 30, "0.25", same)]),
                (5, [r300("20240102", 5, "0.375", same)]),
            )
        ],
    )
    assert per_day(store) == [(D1, 30, 48, 24.0), (D2, 5, 288, 108.0)]
    assert no_overlap(store)


def test_reingesting_is_a_no_op(store: Store, tmp_path: Path) -> None:
    """5-minute v1 (0.125) then 30-minute v2 (0.5): 24.0 kWh. The same bytes again are a
    ``duplicate`` file; the same readings in new bytes (another 100 header) are all duplicate
    readings; either way 1 Jan stays 48 x 0.5 = 24.0 kWh and nothing is stored."""
    a = nem(tmp_path, "a.csv", (5, [r300("20240101", 5, "0.125", "20240102000000")]))
    b = nem(tmp_path, "b.csv", (30, [r300("20240101", 30, "0.5", "20240103000000")]))
    ingest_meter_files(store, [a])
    ingest_meter_files(store, [b])
    before = store.query("SELECT * FROM meter_values ORDER BY ALL").fetchall()
    assert per_day(store) == [(D1, 30, 48, 24.0)]
    for p in (a, b):
        assert ingest_meter_files(store, [p]).files[0].status == "duplicate"
    for p, n in ((a, 288), (b, 48)):
        again = tmp_path / f"again-{p.name}"
        again.write_text(p.read_text().replace("202401031200", "202401041200"))
        res = ingest_meter_files(store, [again]).files[0]
        assert (res.status, res.rows_loaded, res.rows_duplicate) == ("loaded", 0, n)
    assert store.query("SELECT * FROM meter_values ORDER BY ALL").fetchall() == before
    assert per_day(store) == [(D1, 30, 48, 24.0)]


@pytest.mark.parametrize("seed", range(10))
def test_random_mixed_length_revisions_match_the_overlap_rule(tmp_path: Path, seed: int) -> None:
    """Random files re-sending, revising and back-dating days at 5, 15 and 30 minutes (some
    days twice in one file, small chunks) against a plain-Python oracle: a reading that is not
    a duplicate (same channel, start, length, version, kWh and quality as an earlier one) is
    current iff no other such reading of the channel overlapping it is greater by (version_at,
    file order, line). Exercises the direct, newer-version and exact load paths."""
    rng = random.Random(seed)
    stamps = ["20240105000000", "20240107000000", "20240109000000"]
    nmis = ["NMI0000001", "NMI0000002"]
    kept: dict[tuple[str, int, int, str, float, str], tuple[str, int, int]] = {}
    paths: list[Path] = []
    for f in range(6):
        lines = [H100]
        for nmi in rng.sample(nmis, rng.randint(1, 2)):
            for _ in range(rng.randint(1, 2)):
                minutes = rng.choice([5, 15, 30])
                lines.append(b200(minutes, nmi))
                for _ in range(rng.randint(1, 3)):
                    day = rng.randint(1, 3)
                    stamp = rng.choice(stamps)
                    value = rng.choice(["0.125", "0.25", "0.5"])
                    quality = rng.choice(["A", "A", "E52"])
                    lines.append(r300(f"2024010{day}", minutes, value, stamp, quality))
                    for i in range(1440 // minutes):
                        start = day * 1440 + i * minutes
                        key = (nmi, start, minutes, stamp, float(value), quality[0])
                        kept.setdefault(key, (stamp, f, len(lines)))
        lines.append("900")
        p = tmp_path / f"f{f}.csv"
        p.write_text("\n".join(lines) + "\n")
        paths.append(p)
    want = []
    for (nmi, start, minutes, _, kwh, _), order in kept.items():
        beaten = any(
            n2 == nmi and s2 < start + minutes and start < s2 + m2 and o2 > order
            for (n2, s2, m2, _, _, _), o2 in kept.items()
        )
        if not beaten:
            want.append((nmi, start, minutes, kwh))
    as_known: list[tuple[object, list[tuple[object, ...]]]] = []
    current = "SELECT * EXCLUDE (source_file) FROM meter_reads ORDER BY ALL"
    with Store.open(tmp_path / "s.duckdb") as store:
        for p in paths:  # one call per file: file order = ingestion order
            ingest_meter_files(store, [p], chunk_bytes=rng.choice([500, 3000, 1 << 20]))
            assert store.query(DAYS_MATCH_VALUES_SQL).fetchall() == []
            at = store.query("SELECT max(ingested_at) FROM ingested_files").fetchall()[0][0]
            as_known.append((at, store.query(current).fetchall()))
        # the "as known at" view gives, at each file's ingestion, what was current then
        for at, then in as_known:
            assert (
                store.query(
                    "SELECT * EXCLUDE (source_file) FROM meter_reads_as_of(?::TIMESTAMPTZ)"
                    " ORDER BY ALL",
                    [at],
                ).fetchall()
                == then
            )
        got = store.query(
            "SELECT nmi, day(t) * 1440 + hour(t) * 60 + minute(t), interval_minutes, kwh"
            " FROM (SELECT *, interval_start AT TIME ZONE 'Etc/GMT-10' AS t FROM meter_reads)"
            " ORDER BY ALL"
        ).fetchall()
        raw = store.query("SELECT count(*) FROM meter_values").fetchone()
        assert no_overlap(store)
    assert got == sorted(want)
    assert raw == (len(kept),)
