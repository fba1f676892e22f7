"""Re-settling revised days is crash-safe: a SIGKILL part-way through leaves no revised day behind.

July is settled; then meter files revise several July days and the 1 August run re-settles them
one transaction per day. Killed after (or inside) the first of them and rerun, every revised day
must end settled = metered and the store must equal an uninterrupted run's, even though by then
some settled days already carry the newest file id (the bug this guards: the re-settlement scan
started after the newest file any day was settled with, so the days still waiting were lost).
"""

from __future__ import annotations

import datetime as dt
import shutil
import signal
from pathlib import Path

import pytest

from settlement.nem12_writer import write_nem12
from settlement.store import Store
from tests.nightly_fixtures import DAYS, START, build_inbox, meter_frame, nightly_cli

END = START + dt.timedelta(days=DAYS - 1)
AUG1 = dt.date(2024, 8, 1)
# two revision files, each re-reading two July days (+0.1 kWh in every interval)
REVISIONS = {
    "NEM12_revised_a.csv": (dt.date(2024, 7, 3), dt.date(2024, 7, 10)),
    "NEM12_revised_b.csv": (dt.date(2024, 7, 17), dt.date(2024, 7, 24)),
}
TABLES = {
    "wholesale_reads": "SELECT * FROM wholesale_reads ORDER BY ALL",
    "settled_days": "SELECT * FROM settled_days ORDER BY ALL",
    "meter_reads": "SELECT * EXCLUDE (source_file) FROM meter_reads ORDER BY ALL",
    "bills": "SELECT * EXCLUDE (created_at) FROM bills ORDER BY ALL",
    "bill_lines": "SELECT * FROM bill_lines ORDER BY ALL",
    "bill_adjustments": "SELECT * FROM bill_adjustments ORDER BY ALL",
}
# per revised day: settled import kWh against the meter's current E1 reads of that market day
SETTLED_VS_METERED = """
SELECT d.settlement_date, d.run_id,
       (SELECT round(sum(import_kwh), 6) FROM wholesale_settlement w
        WHERE w.settlement_date = d.settlement_date) AS settled,
       (SELECT round(sum(kwh), 6) FROM meter_reads m
        WHERE m.suffix = 'E1' AND m.interval_start >= timezone('Etc/GMT-10', d.settlement_date::TIMESTAMP)
          AND m.interval_start < timezone('Etc/GMT-10', (d.settlement_date + 1)::TIMESTAMP)) AS metered
FROM settled_days d WHERE list_contains(?::DATE[], d.settlement_date) ORDER BY 1
"""


def cli(root: Path, day_from: dt.date, day_to: dt.date, failpoint: str | None = None) -> int:
    """Run `fairshare nightly` in its own process (so SIGKILL is real); its exit code."""
    proc = nightly_cli(
        root, "--from", day_from.isoformat(), "--to", day_to.isoformat(),
        env={"FAIRSHARE_FAILPOINT": failpoint} if failpoint else None,
    )  # fmt: skip
    if failpoint is None:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.returncode


def revise(root: Path, name: str) -> None:
    """Drop revision file ``name`` (see :data:`REVISIONS`) into the meter inbox."""
    import polars as pl

    frame = pl.concat([meter_frame(days=1, start=d, bump=0.1) for d in REVISIONS[name]])
    write_nem12(
        frame.with_columns(update_datetime=dt.datetime(2024, 8, 20)),
        root / "inbox" / "meter" / name,
    )


def tables(root: Path, *, run_ids: bool = True) -> dict[str, list[tuple[object, ...]]]:
    """:data:`TABLES` as stored; without the settling run's id when ``run_ids`` is false."""
    with Store.open(root / "store.duckdb", read_only=True) as s:
        return {
            name: s.con.execute(
                sql
                if run_ids or name not in ("wholesale_reads", "settled_days")
                else sql.replace("SELECT *", "SELECT * EXCLUDE (run_id)")
            ).fetchall()
            for name, sql in TABLES.items()
        }


@pytest.fixture(scope="module")
def july(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with July settled and its bills issued (copied, never changed, by each test)."""
    root = tmp_path_factory.mktemp("july")
    build_inbox(root)
    cli(root, START, END)
    return root


def from_july(july: Path, dest: Path) -> Path:
    shutil.copytree(july, dest)
    return dest


@pytest.fixture(scope="module")
def uninterrupted(july: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store after an uninterrupted 1 August run that found the first revision file."""
    root = from_july(july, tmp_path_factory.mktemp("ref") / "store")
    revise(root, "NEM12_revised_a.csv")
    cli(root, AUG1, AUG1)
    return root


def assert_revised_days_settled_as_metered(root: Path, names: tuple[str, ...]) -> None:
    days = sorted(d for name in names for d in REVISIONS[name])
    with Store.open(root / "store.duckdb", read_only=True) as s:
        rows = s.con.execute(SETTLED_VS_METERED, [days]).fetchall()
        july_run = s.con.execute(
            "SELECT run_id FROM settled_days WHERE settlement_date = ?", [START]
        ).fetchall()[0][0]  # 1 July is never revised
    assert [r[0] for r in rows] == days
    for day, run_id, settled, metered in rows:
        assert settled == pytest.approx(metered, abs=1e-6), (day, settled, metered)
        assert run_id != july_run, (day, run_id)  # re-settled in August, not left as July's


@pytest.mark.parametrize(
    "point",
    [
        "settle.after_day:1",  # 3 July re-settled and committed, 10 July not yet
        "settle.in_transaction:2",  # inside 10 July's transaction (rolled back)
    ],
)
def test_sigkill_while_resettling_then_rerun_resettles_every_revised_day(
    july: Path,
    tmp_path: Path,
    point: str,
    uninterrupted: Path,
) -> None:
    root = from_july(july, tmp_path / "store")
    revise(root, "NEM12_revised_a.csv")
    assert cli(root, AUG1, AUG1, failpoint=point) == -signal.SIGKILL
    cli(root, AUG1, AUG1)
    assert_revised_days_settled_as_metered(root, ("NEM12_revised_a.csv",))
    assert tables(root) == tables(uninterrupted)  # the rerun is the same run: same run ids too


def test_two_interrupted_runs_with_a_new_revision_between_them(july: Path, tmp_path: Path) -> None:
    """Killed, then a second revision file arrives and that run is killed too: the day the first
    file revised and neither run reached is still found (the oldest settlement's file id bounds
    the scan, not the newest nor the second newest). The result is the settlement of one
    uninterrupted run that found both files; only 3 July's run id differs, as it should: the
    first (killed) run re-settled it, a different run from the later one since its inputs
    differ."""
    ref = from_july(july, tmp_path / "ref")
    for name in REVISIONS:
        revise(ref, name)
    cli(ref, AUG1, AUG1)
    root = from_july(july, tmp_path / "store")
    revise(root, "NEM12_revised_a.csv")
    assert cli(root, AUG1, AUG1, failpoint="settle.after_day:1") == -signal.SIGKILL
    revise(root, "NEM12_revised_b.csv")
    assert cli(root, AUG1, AUG1, failpoint="settle.after_day:1") == -signal.SIGKILL
    cli(root, AUG1, AUG1)
    assert_revised_days_settled_as_metered(root, tuple(REVISIONS))
    assert tables(root, run_ids=False) == tables(ref, run_ids=False)
