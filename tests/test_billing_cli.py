"""CLI: fairshare products validate|show, bill --period, bill list|compare, explain bill."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import polars as pl
from test_billing_support import PRODUCTS, add_customer, add_prices, add_reads, half_hours
from typer.testing import CliRunner

from cli.main import app
from settlement.store import Store

runner = CliRunner()
JUL = date(2024, 7, 1)


def _store(path: Path) -> Path:
    with Store.open(path) as s:
        add_customer(s, "A1", [("sh-tou", JUL, None)], solar_kw=5.0)
        add_customer(s, "A2", [("dyn-passthrough", JUL, None)])
        hh = half_hours(JUL, 31)
        for nmi in ("NMIA1", "NMIA2"):
            add_reads(s, nmi, "E1", hh, 0.5)
        add_reads(s, "NMIA1", "B1", hh, 0.2)
        add_prices(s, hh, 60.0)
    return path


def test_products_validate_and_show(tmp_path: Path) -> None:
    res = runner.invoke(app, ["products", "validate", str(PRODUCTS)])
    assert res.exit_code == 0, res.output
    assert "sh-tou (safe_harbour" in res.output
    bad = tmp_path / "bad.toml"
    bad.write_text(
        (PRODUCTS / "sh-tou.toml").read_text().replace('start = "15:00"', 'start = "25:00"', 1)
    )
    res = runner.invoke(app, ["products", "validate", str(bad)])
    assert res.exit_code == 2
    assert "bad.toml: components.1.energy.periods.0.windows.0.start" in res.output
    res = runner.invoke(app, ["products", "show", "dyn-passthrough", "--products", str(PRODUCTS), "--on", "2024-07-01", "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    params = {r["parameter"] for r in json.loads(res.output)}
    assert "components[2].spot.cap" in params


def test_bill_list_explain_compare(tmp_path: Path) -> None:
    db = _store(tmp_path / "s.duckdb")
    res = runner.invoke(app, ["bill", "--period", "2024-07", "--db", str(db), "--products", str(PRODUCTS), "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert (summary["bills"], summary["held"]) == (2, 0)
    res = runner.invoke(app, ["bill", "list", "--period", "2024-07", "--db", str(db), "--json"])
    ids = [b["bill_id"] for b in json.loads(res.stdout)]
    assert ids == ["A1/sh-tou/2024-07-01/r1", "A2/dyn-passthrough/2024-07-01/r1"]
    res = runner.invoke(
        app, ["explain", "bill", ids[1], "--db", str(db), "--out", str(tmp_path / "d.csv")]
    )
    assert res.exit_code == 0, res.output
    assert "recomputed from inputs: matches" in res.output
    assert "part_network" in (tmp_path / "d.csv").read_text().splitlines()[0]
    # the old spelling still works
    res = runner.invoke(
        app, ["explain", "bill", ids[1], "--db", str(db), "--csv", str(tmp_path / "e.csv")]
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "e.csv").read_text() == (tmp_path / "d.csv").read_text()
    # bill list --out: every bill as CSV, the same rows as --json
    res = runner.invoke(app, ["bill", "list", "--period", "2024-07", "--db", str(db), "--out", str(tmp_path / "bills.csv")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert pl.read_csv(tmp_path / "bills.csv")["bill_id"].to_list() == ids
    res = runner.invoke(app, ["bill", "compare", "--period", "2024-07", "--db", str(db), "--products", str(PRODUCTS),
                              "--product", "sh-flat", "--product", "sh-tou", "--product", "dyn-passthrough", "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    cmp = json.loads(res.stdout)
    a1 = {r["product"]: r for r in cmp["accounts"] if r["account"] == "A1"}
    assert a1["sh-tou"]["diff_vs_baseline"] == 0.0
    assert a1["sh-flat"]["baseline"] == "sh-tou"
    assert {c["product"] for c in cmp["cohorts"]} == {"sh-flat", "sh-tou", "dyn-passthrough"}
    # --out: the per-account rows in Parquet, the cohorts beside them, as the JSON has them
    res = runner.invoke(app, ["bill", "compare", "--period", "2024-07", "--db", str(db), "--products", str(PRODUCTS),
                              "--product", "sh-flat", "--product", "sh-tou", "--product", "dyn-passthrough",
                              "--out", str(tmp_path / "cmp.parquet")])  # fmt: skip
    assert res.exit_code == 0, res.output
    accounts = pl.read_parquet(tmp_path / "cmp.parquet").drop("run_id", strict=False)
    cohorts = pl.read_parquet(tmp_path / "cmp-cohorts.parquet")
    assert accounts.sort("account", "product").select("account", "product", "diff_vs_baseline").rows() == sorted(
        (r["account"], r["product"], r["diff_vs_baseline"]) for r in cmp["accounts"])  # fmt: skip
    assert set(cohorts["product"]) == {"sh-flat", "sh-tou", "dyn-passthrough"}
    assert cohorts.height == len(cmp["cohorts"])
    # an --out whose suffix names no format is refused before any work, exit 2
    res = runner.invoke(app, ["bill", "list", "--period", "2024-07", "--db", str(db), "--out", str(tmp_path / "bills.xlsx")])  # fmt: skip
    assert res.exit_code == 2
    assert "must end in .parquet, .csv, .json" in res.output
    assert not (tmp_path / "bills.xlsx").exists()


def test_bill_needs_period_and_reports_held(tmp_path: Path) -> None:
    db = _store(tmp_path / "s.duckdb")
    assert runner.invoke(app, ["bill", "--db", str(db)]).exit_code == 2
    res = runner.invoke(
        app, ["bill", "--period", "2024-08", "--db", str(db), "--products", str(PRODUCTS)]
    )
    assert res.exit_code == 6, res.output  # no reads in August: held, never billed as zero
    assert "no meter reads" in res.output
