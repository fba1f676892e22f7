"""``fairshare status``: the store at a glance (settlement/status.py), checked against the
nightly fixture's store: three accounts, July 2024 metered, priced and billed; then one day of
prices removed, which the status names as a metered day its bills will be held on."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from typer.testing import CliRunner

from cli.main import app
from settlement.config import load_config
from settlement.nightly import run_nightly
from settlement.store import Store
from tariffs.errors import ExitCode
from tests.nightly_fixtures import DAYS, START, build_inbox

runner = CliRunner()
END = START + dt.timedelta(days=DAYS - 1)


def _status(db: Path) -> dict[str, object]:
    res = runner.invoke(app, ["status", "--db", str(db), "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_status_reports_coverage_and_unpriced_days(tmp_path: Path) -> None:
    cfg = load_config(build_inbox(tmp_path))
    db = tmp_path / "store.duckdb"
    with Store.open(db) as store:
        result = run_nightly(store, cfg, START, END)
        assert result.exit_code == ExitCode.OK, result.message
        readings, channels = store.query(
            "SELECT count(*), count(DISTINCT (nmi, suffix)) FROM meter_reads"
        ).fetchall()[0]
        prices = store.query("SELECT count(*) FROM prices").fetchall()[0][0]
    st = _status(db)
    assert st["store"]["schema_version"] >= 16 and st["store"]["size_mb"] > 0
    assert {f["kind"]: f["files"] for f in st["files"]} == {"customers": 1, "meter": 1, "prices": 1}
    meter = st["meter"]
    assert (meter["channels"], meter["readings"]) == (channels, readings)
    assert (meter["first_day"], meter["last_day"]) == (str(START), str(END))
    (nsw,) = st["prices"]
    assert (nsw["region"], nsw["intervals"], nsw["incomplete_days"]) == ("NSW1", prices, 0)
    assert st["unpriced_metered_days"] == []
    assert st["customers"]["accounts"] == 3 and st["quarantined_rows"] == 0
    assert [(b["status"], b["kind"], b["bills"]) for b in st["bills"]] == [("issued", "cycle", 3)]
    assert st["last_run"]["run_id"] == result.run_id
    assert st["last_run"]["status"] == "succeeded"

    # a market day of prices gone (15 July, UTC+10): the metered day is named, the price span
    # has an incomplete day
    with Store.open(db) as store:
        store.con.execute(
            "DELETE FROM price_reads_raw WHERE interval_start >= TIMESTAMPTZ '2024-07-14 14:00:00+00'"
            " AND interval_start < TIMESTAMPTZ '2024-07-15 14:00:00+00'"
        )
    st = _status(db)
    assert st["unpriced_metered_days"] == [
        {"region": "NSW1", "days": 1, "first_day": "2024-07-15", "last_day": "2024-07-15"}
    ]
    assert st["prices"][0]["incomplete_days"] == 1
    res = runner.invoke(app, ["status", "--db", str(db)], env={"COLUMNS": "160"})
    assert res.exit_code == 0, res.output
    assert "metered market days without a full day of prices" in res.output
    assert f"last nightly run: {result.run_id}" in res.output
