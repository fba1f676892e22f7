"""`make demo` end to end on a small retailer: nightly months, a revision, shadow bills, risk."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from settlement.demo.showcase import month_start
from settlement.store import Store


def test_month_start() -> None:
    assert month_start(dt.date(2024, 7, 1), 1) == dt.date(2024, 8, 1)
    assert month_start(dt.date(2024, 11, 15), 2) == dt.date(2025, 1, 1)


def test_demo_runs_nightlies_with_an_adjustment_and_prices_the_safe_harbour(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app,
        ["demo", "--out", str(tmp_path), "--households", "30", "--days", "125",
         "--risk-paths", "64", "--json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    show = json.loads(res.stdout[res.stdout.index("{") :])["showcase"]
    first, second = show["nightly"]
    assert first["status"] == second["status"] == "succeeded"
    assert first["bills_issued"] > 0 and first["bills_held"] == 0
    assert second["adjustments"] > 0  # the revised file corrected issued bills
    assert Path(second["manifest"]).exists()
    assert first["accrued_ex_tax"] > 0
    for adj in show["adjustments"]:
        assert adj["status"] == "applied" and float(adj["net_ex_gst"]) > 0  # re-read 10% higher
    with Store.open(tmp_path / "fairshare.duckdb", read_only=True) as s:
        failing = s.query("SELECT count(*) FROM audit_results WHERE failing_rows > 0").fetchall()
        # every household's every supplied day of each nightly's month has its charges accrued
        for run in (first, second):
            d1, d2 = run["range"].split(" .. ")
            supplied = s.query(
                "SELECT count(*) FROM customers c JOIN enrolments e USING (account), "
                "range(?::DATE, ?::DATE + 1, INTERVAL 1 DAY) t(d) WHERE d >= c.move_in "
                "AND (c.move_out IS NULL OR d < c.move_out) AND d >= e.effective_from "
                "AND (e.effective_to IS NULL OR d < e.effective_to)",
                [d1, d2],
            ).fetchall()[0][0]
            assert run["accrued_account_days"] == supplied > 0
    assert failing == [(0,)]
    sh = show["safe_harbour"]["safe_harbour"]
    assert 0.1 < sh["rate_per_kwh"] < 1.0  # AUD/kWh, a retail-sized rate
    assert show["cohorts"], "shadow bills compared products"


def test_the_showcase_report_states_the_reentry_option_at_the_rate(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The readable report gives the re-entry option's value at the solved rate with its
    exercise share, so a zero reads as an outcome (nobody exercises), not a missing figure."""
    from cli.demo import _render_showcase
    from settlement.demo.showcase import ShowcaseSummary

    est = {"value": 0.0, "se": 0.0}
    summary = ShowcaseSummary(
        safe_harbour={
            "safe_harbour": {"rate_per_kwh": 0.4353, "rate_se_per_kwh": 0.0003},
            "reentry": {
                "rational_in_sample": {"aud_per_customer_year": est},
                "perfect_foresight": {"aud_per_customer_year": {"value": 0.1992, "se": 0.1363}},
                "exercise_share": {"rational": 0.0},
            },
        }
    )
    _render_showcase(summary)
    text = " ".join(capsys.readouterr().out.split())
    assert "safe-harbour flat rate: 0.4353 AUD/kWh" in text
    assert (
        "re-entry option at this rate: 0.00 +- 0.00 AUD per dynamic customer-year "
        "(rational exercise on 0% of paths; perfect foresight 0.20)"
    ) in text
