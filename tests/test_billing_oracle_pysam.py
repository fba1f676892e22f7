"""Oracle: NREL PySAM UtilityRate5 agrees with fairshare's energy, export and demand lines.

Real household data: Ausgrid Solar Home customer 12 (FY2011-12, average kW per half-hour, GC =
general consumption, GG = gross PV), first 365 days. Prices: AEMO SA1 2020 half-hourly RRP
(many negative intervals). PySAM's conventions are matched on the fairshare side: a 365-day year
starting on a Monday (2001-01-01 is one), one clock with no daylight saving (UTC) and no public
holidays, gross metering ("buy all, sell all": all load imported, all generation exported), no
tax, and only the comparable lines (energy, export credit, demand) are compared, month by month,
to 1e-6 relative.
"""

from __future__ import annotations

import gzip
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from tariffs.calculus import Context, component_lines, localise
from tariffs.product import parse_product

ur = pytest.importorskip("PySAM.Utilityrate5")
pytestmark = pytest.mark.shared
N = 17_520
HOURS = range(24)


@pytest.fixture(scope="module")
def household(shared_data: Path) -> pl.DataFrame:
    raw = pl.read_csv(shared_data / "households" / "ausgrid-solar-home-customer12-fy2012.csv")
    return raw.head(N).select(pl.col("GC").alias("load_kw"), pl.col("GG").alias("gen_kw"))


@pytest.fixture(scope="module")
def spot(shared_data: Path) -> np.ndarray:
    folder = shared_data / "prices" / "aemo-price-and-demand"
    frames = []
    for m in range(1, 13):
        with gzip.open(folder / f"PRICE_AND_DEMAND_2020{m:02d}_SA1.csv.gz") as fh:
            frames.append(pl.read_csv(fh.read()))
    rrp = pl.concat(frames)["RRP"].to_numpy()[:N]
    assert (rrp < 0).sum() > 100  # negative prices are part of the test
    return rrp


def run_pysam(load: np.ndarray, gen: np.ndarray, rates: dict[str, Any]) -> dict[str, Any]:
    """Run UtilityRate5 and return its outputs as a dict (copied before the model is freed)."""
    m = ur.new()
    m.Lifetime.assign({"analysis_period": 1, "inflation_rate": 0, "system_use_lifetime_output": 0})
    m.SystemOutput.assign({"gen": tuple(gen), "degradation": (0,)})
    m.Load.assign({"load": tuple(load), "load_escalation": (0,)})
    base = {
        "en_electricity_rates": 1, "rate_escalation": (0,), "ur_metering_option": 4,
        "ur_monthly_fixed_charge": 0, "ur_monthly_min_charge": 0, "ur_annual_min_charge": 0,
        "ur_ec_sched_weekday": [[1] * 24] * 12, "ur_ec_sched_weekend": [[1] * 24] * 12,
        "ur_ec_tou_mat": [[1, 1, 1e38, 0, 0, 0]], "ur_dc_enable": 0,
        "ur_en_ts_buy_rate": 0, "ur_en_ts_sell_rate": 0, "ur_nm_yearend_sell_rate": 0,
        "ur_sell_eq_buy": 0, "ur_nm_credit_month": 0, "ur_nm_credit_rollover": 0,
        "ur_nb_credit_expire": 0, "ur_nb_apply_credit_current_month": 0,
        "ur_yearzero_usage_peaks": [0] * 12,
    }  # fmt: skip
    m.ElectricityRates.assign({**base, **rates})
    m.execute(0)
    return {k: np.asarray(v) for k, v in m.Outputs.export().items()}


def fairshare_monthly(
    product_toml: str, hh: pl.DataFrame, spot_mwh: np.ndarray | None
) -> pl.DataFrame:
    """Bill the year as 12 monthly segments; return amount per (month, component)."""
    product = parse_product(product_toml, "oracle")
    starts = [datetime(2001, 1, 1) + timedelta(minutes=30 * i) for i in range(N)]
    iv = pl.DataFrame(
        {
            "interval_start": starts,
            "interval_minutes": [30] * N,
            "import_kwh": hh["load_kw"] * 0.5,
            "controlled_kwh": [0.0] * N,
            "export_kwh": hh["gen_kw"] * 0.5,
            "spot_per_mwh": spot_mwh if spot_mwh is not None else np.zeros(N),
            "loss_factor": [1.0] * N,
        },
        schema_overrides={"interval_minutes": pl.Int32},
    ).with_columns(
        pl.col("interval_start").dt.replace_time_zone("UTC"),
        pl.col("interval_start").dt.month().cast(pl.Int64).alias("seg"),
    )
    segs = pl.DataFrame(
        {
            "seg": list(range(1, 13)),
            "start": [date(2001, m, 1) for m in range(1, 13)],
            "end": [date(2001 + (m == 12), m % 12 + 1, 1) for m in range(1, 13)],
            "cycle_days": [
                (date(2001 + (m == 12), m % 12 + 1, 1) - date(2001, m, 1)).days
                for m in range(1, 13)
            ],
            "concession": [False] * 12,
        },
        schema_overrides={"cycle_days": pl.Int32},
    )
    ctx = Context(product, "UTC", ())
    lines = component_lines(ctx, localise(ctx, iv), segs)
    return lines.group_by("seg", "component").agg(pl.sum("amount")).sort("seg")


def monthly(lines: pl.DataFrame, component: str) -> np.ndarray:
    return lines.filter(pl.col("component") == component).sort("seg")["amount"].to_numpy()


HEAD = """
id = "oracle"
name = "oracle"
kind = "standard"
tax_rate = [{ effective_from = 2000-01-01, value = "0", source = "PySAM has no tax" }]
holidays = { country = "none" }
"""


def rate(v: str) -> str:
    return f'[{{ effective_from = 2000-01-01, value = "{v}", source = "oracle" }}]'


def test_two_period_tou_with_tou_feed_in(household: pl.DataFrame) -> None:
    toml = (
        HEAD
        + f"""
[[components]]
type = "energy"
name = "Energy"
  [[components.periods]]
  name = "peak"
  rate = {rate("0.45")}
  windows = [{{ days = ["weekday"], start = "15:00", end = "21:00" }}]
  [[components.periods]]
  name = "off-peak"
  default = true
  rate = {rate("0.20")}
[[components]]
type = "feed_in"
name = "Feed-in"
  [[components.periods]]
  name = "peak"
  rate = {rate("0.07")}
  windows = [{{ days = ["weekday"], start = "15:00", end = "21:00" }}]
  [[components.periods]]
  name = "off-peak"
  default = true
  rate = {rate("0.05")}
"""
    )
    ours = fairshare_monthly(toml, household, None)
    wk = [[2 if 15 <= h < 21 else 1 for h in HOURS]] * 12
    out = run_pysam(
        household["load_kw"].to_numpy(), household["gen_kw"].to_numpy(),
        {"ur_ec_sched_weekday": wk, "ur_ec_tou_mat": [[1, 1, 1e38, 0, 0.20, 0.05], [2, 1, 1e38, 0, 0.45, 0.07]]},
    )  # fmt: skip
    energy = out["year1_monthly_ec_charge_without_system"]
    credit = energy - out["year1_monthly_ec_charge_with_system"]
    np.testing.assert_allclose(monthly(ours, "Energy"), energy, rtol=1e-6)
    np.testing.assert_allclose(-monthly(ours, "Feed-in"), credit, rtol=1e-6)


def test_inclining_block_per_month(household: pl.DataFrame) -> None:
    toml = (
        HEAD
        + f"""
[[components]]
type = "block_energy"
name = "Block"
period = "month"
  [[components.blocks]]
  up_to_kwh = "300"
  rate = {rate("0.25")}
  [[components.blocks]]
  rate = {rate("0.30")}
"""
    )
    ours = fairshare_monthly(toml, household, None)
    load = household["load_kw"].to_numpy()
    out = run_pysam(
        load, np.zeros(N), {"ur_ec_tou_mat": [[1, 1, 300, 0, 0.25, 0], [1, 2, 1e38, 0, 0.30, 0]]}
    )
    pysam = out["year1_monthly_ec_charge_without_system"]
    assert (out["year1_monthly_load"] > 300).all()  # both tiers are used every month
    np.testing.assert_allclose(monthly(ours, "Block"), pysam, rtol=1e-6)


def test_monthly_demand_charge(household: pl.DataFrame) -> None:
    toml = (
        HEAD
        + f"""
[[components]]
type = "demand"
name = "Demand"
unit = "per_kw_month"
rate = {rate("12.50")}
"""
    )
    ours = fairshare_monthly(toml, household, None)
    out = run_pysam(
        household["load_kw"].to_numpy(), np.zeros(N),
        {"ur_dc_enable": 1, "ur_dc_flat_mat": [[m, 1, 1e38, 12.5] for m in range(12)],
         "ur_dc_sched_weekday": [[1] * 24] * 12, "ur_dc_sched_weekend": [[1] * 24] * 12,
         "ur_dc_tou_mat": [[1, 1, 1e38, 0]]},
    )  # fmt: skip
    np.testing.assert_allclose(
        monthly(ours, "Demand"), out["year1_monthly_dc_fixed_without_system"], rtol=1e-6
    )


def test_time_series_buy_and_sell_with_negative_prices(
    household: pl.DataFrame, spot: np.ndarray
) -> None:
    toml = (
        HEAD
        + f"""
[[components]]
type = "energy"
name = "Dynamic"
  [components.spot]
  multiplier = {rate("1")}
  apply_loss_factors = false
    [[components.spot.adders]]
    name = "network and fees"
    rate = {rate("0.10")}
[[components]]
type = "feed_in"
name = "Export"
  [components.spot]
  multiplier = {rate("1")}
  apply_loss_factors = false
"""
    )
    ours = fairshare_monthly(toml, household, spot)
    buy, sell = spot / 1000 + 0.10, spot / 1000
    out = run_pysam(
        household["load_kw"].to_numpy(), household["gen_kw"].to_numpy(),
        {"ur_en_ts_buy_rate": 1, "ur_ts_buy_rate": tuple(buy), "ur_en_ts_sell_rate": 1, "ur_ts_sell_rate": tuple(sell)},
    )  # fmt: skip
    energy = out["year1_monthly_ec_charge_without_system"]
    credit = energy - out["year1_monthly_ec_charge_with_system"]
    np.testing.assert_allclose(monthly(ours, "Dynamic"), energy, rtol=1e-6)
    np.testing.assert_allclose(-monthly(ours, "Export"), credit, rtol=1e-6)
