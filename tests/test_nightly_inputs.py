"""The nightly's inputs and configuration: what the run key covers, what a rerun says, how files
are archived, and that a dry run touches nothing (review findings, 2026-11-23)."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest

from settlement.config import load_config
from settlement.ingest_common import sha256_file
from settlement.nightly import run_nightly
from settlement.store import Store
from tariffs.errors import ExitCode
from tests.nightly_fixtures import build_inbox, meter_frame
from tests.test_nightly import END, START, cli

PRODUCTS = Path(__file__).resolve().parents[1] / "data" / "products"
# sh-flat's energy rate starting on 15 July: every July bill on it lacks a rate for 1-14 July
RATE = 'effective_from = 2024-07-01, value = "0.3050"'
LATE_RATE = 'effective_from = 2024-07-15, value = "0.3050"'


def _own_products(root: Path) -> Path:
    """Copy the shipped products under ``root`` and point the settings file at them."""
    folder = root / "products"
    shutil.copytree(PRODUCTS, folder)
    cfg = root / "fairshare.toml"
    text = cfg.read_text().splitlines()
    cfg.write_text("\n".join(t for t in text if not t.startswith("products")) + "\n")
    cfg.write_text(cfg.read_text() + f'products = "{folder}"\n')
    return folder / "sh-flat.toml"


def test_dry_run_opens_no_store(tmp_path: Path) -> None:
    build_inbox(tmp_path)
    proc = cli(tmp_path, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "store.duckdb").exists()
    assert (tmp_path / "inbox" / "meter" / "NEM12_retailer_202407.csv").exists()


def test_a_fixed_product_file_is_a_new_run_that_bills_the_held_account(tmp_path: Path) -> None:
    """Product files are configuration: their content is in the run key. A1 (on sh-flat) is
    held while the file lacks a rate for 1-14 July; an unchanged rerun says so with the same
    exit code (6); once the file is fixed the run is new and A1's bill is issued."""
    build_inbox(tmp_path)
    sh_flat = _own_products(tmp_path)
    good = sh_flat.read_text()
    assert RATE in good
    sh_flat.write_text(good.replace(RATE, LATE_RATE))
    cfg = load_config(tmp_path / "fairshare.toml")
    with Store.open(tmp_path / "store.duckdb") as store:
        first = run_nightly(store, cfg, START, END)
        again = run_nightly(store, cfg, START, END)
        sh_flat.write_text(good)
        fixed = run_nightly(store, load_config(tmp_path / "fairshare.toml"), START, END)
        bills = store.query(
            "SELECT account, status FROM bills WHERE status IN ('held', 'issued') ORDER BY 1"
        ).fetchall()
        pending = store.query("SELECT count(*) FROM run_stages WHERE run_id = 'pending'")
        n_pending = pending.fetchall()[0][0]
    assert first.exit_code == ExitCode.HELD
    assert (again.status, again.exit_code) == ("up-to-date", ExitCode.HELD)
    assert n_pending == 0  # the up-to-date attempt left no stage row behind
    assert fixed.run_id != first.run_id and fixed.exit_code == ExitCode.OK, fixed.message
    assert ("A1", "issued") in bills and ("A1", "held") not in bills
    hashes = fixed.manifest["parameters"]["product_files"]
    assert hashes["sh-flat.toml"] == sha256_file(sh_flat)
    assert {v["product"] for v in fixed.manifest["product_versions"]} >= {"sh-flat"}


def test_a_file_delivered_again_is_nothing_to_do(tmp_path: Path) -> None:
    build_inbox(tmp_path)
    cfg = load_config(tmp_path / "fairshare.toml")
    archived = tmp_path / "archive" / "customers" / "customers.csv"
    with Store.open(tmp_path / "store.duckdb") as store:
        first = run_nightly(store, cfg, START, END)
        shutil.copy(archived, tmp_path / "inbox" / "customers" / "customers.csv")
        again = run_nightly(store, cfg, START, END)
        runs = store.query("SELECT run_id, attempts FROM runs").fetchall()
    assert again.status == "up-to-date" and again.exit_code == ExitCode.OK
    assert runs == [(first.run_id, 1)]
    assert not any((tmp_path / "inbox" / "customers").iterdir())
    assert [p.name for p in archived.parent.iterdir()] == ["customers.csv"]


def test_the_archive_never_overwrites_an_earlier_file_of_the_same_name(tmp_path: Path) -> None:
    build_inbox(tmp_path)
    cfg = load_config(tmp_path / "fairshare.toml")
    name = "NEM12_retailer_202407.csv"
    with Store.open(tmp_path / "store.duckdb") as store:
        run_nightly(store, cfg, START, END)
        first = sha256_file(tmp_path / "archive" / "meter" / name)
        from settlement.nem12_writer import write_nem12

        write_nem12(meter_frame(days=2, bump=0.1), tmp_path / "inbox" / "meter" / name)
        second = sha256_file(tmp_path / "inbox" / "meter" / name)
        result = run_nightly(store, cfg, START, END)
    kept = {sha256_file(p): p.name for p in (tmp_path / "archive" / "meter").iterdir()}
    assert kept == {first: name, second: f"NEM12_retailer_202407.{second[:12]}.csv"}
    # the manifest says where each input is now: both were read as inbox/meter/<name>
    meter = [i for i in result.manifest["inputs"] if i["kind"] == "meter"]
    assert [Path(i["path"]).name for i in meter] == [name, name]
    assert [[Path(a).name for a in i["archived"]] for i in meter] == [
        [kept[i["sha256"]]] for i in meter
    ]
    assert all(Path(a).exists() for i in result.manifest["inputs"] for a in i["archived"])


def test_killed_after_a_quarantined_file_the_rerun_still_reports_it(tmp_path: Path) -> None:
    """Exit 3 whether or not the run was killed after the broken file's commit: the rerun sees
    that file as a duplicate but it is still one of the run's inputs."""
    build_inbox(tmp_path)
    bad = tmp_path / "inbox" / "meter" / "NEM12_broken.csv"
    good = (tmp_path / "inbox" / "meter" / "NEM12_retailer_202407.csv").read_text().splitlines()
    bad.write_text("\n".join([good[0], good[1], good[2].replace(",0.", ",x.", 1), "900"]) + "\n")
    # customers, prices, then the broken meter file: its commit is the third
    killed = cli(tmp_path, env={"FAIRSHARE_FAILPOINT": "ingest.after_commit:3"})
    assert killed.returncode == -signal.SIGKILL
    rerun = cli(tmp_path)
    assert rerun.returncode == ExitCode.QUARANTINED, rerun.stdout + rerun.stderr
    # text logs, not on a terminal (a scheduler's file): progress lines as the run goes
    assert " progress stage=settle done=1 total=" in rerun.stderr
    again = cli(tmp_path)
    assert again.returncode == ExitCode.QUARANTINED and "nothing to do" in again.stdout


def test_a_revision_worth_less_than_a_cent_does_not_fail_the_energy_audit(tmp_path: Path) -> None:
    """+0.001 kWh on one July interval after the July bills were issued: no cent changes, so no
    adjustment; a later run whose range holds the July close still passes its audits (the
    billed-energy audit checks bills issued from the data as known now)."""
    import datetime as dt

    import polars as pl

    from settlement.nem12_writer import write_nem12

    build_inbox(tmp_path)
    cfg = load_config(tmp_path / "fairshare.toml")
    with Store.open(tmp_path / "store.duckdb") as store:
        assert run_nightly(store, cfg, START, END).exit_code == ExitCode.OK
        one = meter_frame(days=1, start=dt.date(2024, 7, 3)).filter(pl.col("suffix") == "E1")
        one = one.head(1).with_columns(
            pl.col("values").list.eval(
                pl.element() + pl.when(pl.int_range(pl.len()) == 0).then(0.001).otherwise(0.0)
            ),
            update_datetime=dt.datetime(2024, 8, 20),
        )
        write_nem12(one, tmp_path / "inbox" / "meter" / "NEM12_tiny.csv")
        later = run_nightly(store, cfg, dt.date(2024, 7, 25), dt.date(2024, 8, 1))
        n_adj = store.query("SELECT count(*) FROM bill_adjustments").fetchall()[0][0]
    assert n_adj == 0
    assert later.exit_code == ExitCode.OK, [a for a in later.audits if not a.passed]


def test_overlapping_current_reads_fail_their_audit(tmp_path: Path) -> None:
    """Twelve current 5-minute reads 00:00-00:55 UTC and current 30-minute reads at 00:30 and
    01:00 of one channel: the 00:30 half-hour overlaps the six 5-minute reads 00:30-00:55, so
    six rows fail (the 30-minute read itself, ordered after the 00:30 5-minute read, and the
    five 5-minute reads it covers from 00:35); the 01:00 read overlaps nothing."""
    import datetime as dt

    from settlement.audits import run_audits
    from settlement.meter_days import FULL_DERIVE_SQL

    with Store.open(tmp_path / "s.duckdb") as s:
        s.con.execute("INSERT INTO meter_channels VALUES (1, 'N1', 'E1')")
        s.con.execute("INSERT INTO meter_flags VALUES (1, 'A', NULL, NULL)")
        starts = [(f"00:{m:02d}", 5) for m in range(0, 60, 5)] + [("00:30", 30), ("01:00", 30)]
        for hhmm, minutes in starts:
            s.con.execute(
                "INSERT INTO meter_values VALUES (1, ?::TIMESTAMPTZ, ?, 0.1, 1, now(), 1, 1, true)",
                [f"2024-07-02 {hhmm}:00+00", minutes],
            )
        s.con.execute(FULL_DERIVE_SQL)  # their day rows, as ingestion writes them
        (audit,) = [
            a
            for a in run_audits(s, dt.date(2024, 7, 2), dt.date(2024, 7, 2))
            if a.name == "meter_no_overlapping_current_reads"
        ]
    assert audit.failing_rows == 6
    assert {r["interval_minutes"] for r in audit.sample} <= {5, 30}


def test_a_late_customer_file_resettles_the_days_of_its_new_account(tmp_path: Path) -> None:
    """A3's July meter data is settled before A3's customer row arrives (July: 31 days x 48
    half-hours = 1,488 reads of A3 stored, none settled as A3's); when the row arrives with the
    August run, the July days are re-settled and all 1,488 are A3's, and A3's July cycle, which
    ended before the run's range, is billed and issued by that run's close."""
    import datetime as dt

    build_inbox(tmp_path)
    customers = tmp_path / "inbox" / "customers" / "customers.csv"
    lines = customers.read_text().splitlines()
    assert lines[3].startswith("A3,")
    customers.write_text("\n".join(lines[:3]) + "\n")  # header, A1, A2
    cfg = load_config(tmp_path / "fairshare.toml")
    with Store.open(tmp_path / "store.duckdb") as store:
        run_nightly(store, cfg, START, END)
        before = store.query("SELECT count(*) FROM wholesale_reads WHERE account = 'A3'")
        n_before = before.fetchall()[0][0]
        late = tmp_path / "inbox" / "customers" / "customers_late.csv"
        late.write_text("\n".join([lines[0], lines[3]]) + "\n")
        aug = run_nightly(store, cfg, dt.date(2024, 8, 1), dt.date(2024, 8, 1))
        n_after = store.query(
            "SELECT count(*) FROM wholesale_reads WHERE account = 'A3' AND suffix = 'E1' "
            "AND settlement_date <= DATE '2024-07-31'"
        ).fetchall()[0][0]
        a3 = store.query(
            "SELECT status, period_start FROM bills WHERE account = 'A3' AND NOT shadow "
            "AND status IN ('issued', 'held')"
        ).fetchall()
    assert n_before == 0
    assert a3 == [("issued", dt.date(2024, 7, 1))]
    assert len(aug.manifest["stages"]["settle"]["resettled_days"]) == 31
    assert n_after == 31 * 48


def test_a_cycle_west_of_market_time_closes_when_its_last_reads_are_in(tmp_path: Path) -> None:
    """A1 in Adelaide (UTC+9:30): its July cycle ends at local midnight, 14:30 UTC on 31 July,
    half an hour into market day 1 August. The run for July closes A2's and A3's cycles
    (Sydney: they end at 14:00 UTC, the end of market day 31 July) and leaves A1's; the run for
    1 August, with that day's reads, issues it complete (nothing held)."""
    import datetime as dt

    from settlement.nem12_writer import write_nem12
    from tests.nightly_fixtures import price_csv

    build_inbox(tmp_path)
    customers = tmp_path / "inbox" / "customers" / "customers.csv"
    text = customers.read_text()
    sydney = "A1,4102000001,NSW1,Australia/Sydney"
    assert sydney in text
    customers.write_text(text.replace(sydney, "A1,4102000001,NSW1,Australia/Adelaide"))
    cfg = load_config(tmp_path / "fairshare.toml")
    aug = dt.date(2024, 8, 1)
    with Store.open(tmp_path / "store.duckdb") as store:
        july = run_nightly(store, cfg, START, END)
        after_july = store.query("SELECT account, status FROM bills ORDER BY 1").fetchall()
        write_nem12(meter_frame(days=1, start=aug), tmp_path / "inbox" / "meter" / "NEM12_0801.csv")
        price_csv(tmp_path / "inbox" / "prices" / "PRICE_AND_DEMAND_0801.csv", days=1, start=aug)
        first_aug = run_nightly(store, cfg, aug, aug)
        a1 = store.query(
            "SELECT status, period_start, period_end FROM bills WHERE account = 'A1'"
        ).fetchall()
    assert july.exit_code == ExitCode.OK and after_july == [("A2", "issued"), ("A3", "issued")]
    assert first_aug.exit_code == ExitCode.OK, first_aug.message
    assert a1 == [("issued", dt.date(2024, 7, 1), dt.date(2024, 8, 1))]


def test_the_code_version_covers_the_libraries_that_compute_the_numbers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another DuckDB (or polars, holiday calendar, ...) is another code version, so another run
    key: a rerun under upgraded libraries recomputes rather than reporting the old run."""
    import duckdb

    from settlement import runs

    before = runs.code_version()
    assert runs.runtime_versions()["duckdb"] == duckdb.__version__
    real = runs.runtime_versions()
    monkeypatch.setattr(runs, "runtime_versions", lambda: real | {"holidays": "0.0"})
    assert runs.code_version() != before
    monkeypatch.setattr(runs, "runtime_versions", lambda: dict(real))
    assert runs.code_version() == before
