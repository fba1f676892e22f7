"""Hand-worked reference bills: every case in tests/reference/*.toml, arithmetic written out there.

A case names a product (a file in data/products, or inline TOML), a run of local days with
uniform half-hourly kWh (plus overrides at given local times) and every expected line with its
amount, tax and the arithmetic that gives them. All lines of the bill must be listed.
"""

from __future__ import annotations

import re
import tomllib
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from test_billing_support import half_hours, product

from tariffs.calculus import CREDIT_NOTE, Context
from tariffs.calendar import holiday_dates
from tariffs.lines import MINIMUM_NOTE, bill_segments
from tariffs.product import parse_product

CASES = sorted((Path(__file__).parent / "reference").glob("*.toml"))


def _intervals(case: dict[str, Any], tz: str) -> pl.DataFrame:
    starts = half_hours(case["start"], case["days"], tz)
    frame = pl.DataFrame({"interval_start": starts}).with_columns(
        pl.lit(1, pl.Int64).alias("seg"),
        pl.lit(30, pl.Int32).alias("interval_minutes"),
        pl.lit(float(case.get("import_kwh", 0.0))).alias("import_kwh"),
        pl.lit(float(case.get("controlled_kwh", 0.0))).alias("controlled_kwh"),
        pl.lit(float(case.get("export_kwh", 0.0))).alias("export_kwh"),
        pl.lit(float(case.get("spot_per_mwh", 0.0))).alias("spot_per_mwh"),
        pl.lit(float(case.get("loss_factor", 1.0))).alias("loss_factor"),
        pl.col("interval_start")
        .dt.convert_time_zone(tz)
        .dt.replace_time_zone(None)
        .alias("_local"),
    )
    for o in case.get("overrides", []):
        at = o["local"] if isinstance(o["local"], datetime) else datetime.fromisoformat(o["local"])
        hit = pl.col("_local") == at
        frame = frame.with_columns(
            [
                pl.when(hit).then(pl.lit(float(v))).otherwise(pl.col(k)).alias(k)
                for k, v in o.items()
                if k != "local"
            ]
        )
    return frame.drop("_local")


def _product(case: dict[str, Any], path: Path) -> Any:
    if "product_toml" in case:
        return parse_product(case["product_toml"], str(path))
    return product(case["product"])


def _segments(case: dict[str, Any]) -> list[dict[str, Any]]:
    """One segment (the whole case) or the case's ``[[segments]]`` (e.g. a product switch)."""
    return case.get(
        "segments", [{"product": case.get("product"), "start": case["start"], "days": case["days"]}]
    )


# "Q unit x R CUR/unit = A CUR ex TAX; from..to; N intervals; note" (tariffs.lines.finish_lines)
EXPLANATION = re.compile(
    r"^(?P<q>-?[0-9.]+) (?P<unit>\S+) x (?P<r>-?[0-9.e-]+|\(no kWh\)) (?P<cur>\S+)/(?P=unit)"
    r" = (?P<a>-?[0-9.e-]+) (?P=cur) ex \S+; \S+\.\.\S+; \d+ intervals; (?P<note>.*)$"
)


def _check_explanation(line: dict[str, Any]) -> None:
    """A line's explanation checks as written: amount = quantity x rate, or -(quantity x rate)
    for a credit, or (a minimum-charge top-up) at most quantity x rate; the figures as printed
    (quantity and rate to 6 places) and equal to the line's own."""
    text = line["explanation"]
    m = EXPLANATION.match(text)
    assert m, text
    q, a = float(m["q"]), float(m["a"])
    assert q == pytest.approx(line["quantity"], abs=5e-7), text
    # the cents are the printed amount rounded half away from zero (tariffs.lines.cents_expr)
    cents = Decimal(m["a"]).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    assert cents == Decimal(line["amount_ex_tax_cents"]) / 100, text
    if m["r"] == "(no kWh)":
        assert q == 0, text
        return
    r = float(m["r"])
    product = q * r
    slack = 5e-7 * (abs(q) + abs(r)) + 2e-6
    share = re.search(r"amount = quantity x rate x (\d+)(?: / (\d+))? days$", m["note"])
    if share:  # demand: the days supplied in the month (of its days, at a monthly rate)
        product *= int(share[1]) / int(share[2] or 1)
        slack *= int(share[1])
    if MINIMUM_NOTE in m["note"]:
        assert 0 < a <= product + slack, text
    elif CREDIT_NOTE in m["note"]:
        assert a == pytest.approx(-product, abs=slack), text
    else:
        assert a == pytest.approx(product, abs=slack), text


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_reference_bill(path: Path) -> None:
    case = tomllib.loads(path.read_text())
    tz = case.get("timezone", "Australia/Sydney")
    iv_all = _intervals(case, tz)
    got: dict[tuple[int, str, str], dict[str, Any]] = {}
    totals = [0, 0]
    for k, seg_spec in enumerate(_segments(case), start=1):
        prod = _product(
            {**case, **({"product": seg_spec["product"]} if seg_spec.get("product") else {})}, path
        )
        start: date = seg_spec["start"]
        end = date.fromordinal(start.toordinal() + seg_spec["days"])
        segs = pl.DataFrame(
            {"seg": [1], "start": [start], "end": [end],
             "cycle_days": [case.get("cycle_days", case["days"])],
             "concession": [case.get("concession", False)]},
            schema_overrides={"cycle_days": pl.Int32},
        )  # fmt: skip
        local = iv_all["interval_start"].dt.convert_time_zone(tz).dt.date()
        iv = iv_all.filter((local >= start) & (local < end))
        ctx = Context(prod, tz, tuple(holiday_dates(prod.holidays, [start.year, end.year])))
        res = bill_segments(ctx, iv, segs)
        assert res.holds.height == 0, res.holds
        for r in res.lines.iter_rows(named=True):
            got[(k, r["component"], r["detail"])] = r
            _check_explanation(r)
        totals[0] += int(res.lines["amount_ex_tax_cents"].sum())
        totals[1] += int(res.lines["tax_cents"].sum())
    want = {(e.get("segment", 1), e["component"], e.get("detail", "")): e for e in case["expect"]}
    assert sorted(got) == sorted(want), f"lines differ: got {sorted(got)}"
    for key, e in want.items():
        g = got[key]
        assert Decimal(g["amount_ex_tax_cents"]) / 100 == Decimal(e["amount_ex_tax"]), (
            key,
            e["arithmetic"],
        )
        assert Decimal(g["tax_cents"]) / 100 == Decimal(e["tax"]), (key, e["arithmetic"])
        if "quantity" in e:
            assert g["quantity"] == pytest.approx(e["quantity"], abs=1e-9), key
    assert Decimal(totals[0]) / 100 == Decimal(case["total_ex_tax"])
    assert Decimal(totals[1]) / 100 == Decimal(case["total_tax"])
