"""Property tests of the bill calculus (hypothesis): additivity, zero use, monotonicity, dated
rates, cents, tax only on import charges."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_billing_support import half_hours, product

from tariffs.calculus import Context, component_lines, localise, priced_intervals
from tariffs.calendar import holiday_dates
from tariffs.lines import bill_segments, cents_expr, micro_expr, tax_cents_expr
from tariffs.money import line_tax, round_cents
from tariffs.product import parse_product

TZ = "Australia/Sydney"
START = date(2024, 9, 28)  # spans the 6 October daylight-saving change and Labour Day (7 Oct)
SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TOU_FEED = product("sh-tou")
BLOCKY = product("std-block-demand")
DYN = product("dyn-passthrough")


def ctx(p: object) -> Context:
    return Context(p, TZ, tuple(holiday_dates(p.holidays, [2024, 2025])))  # type: ignore[arg-type]


def frame(
    days: int, imp: list[float], exp: list[float], spot: list[float] | None = None
) -> pl.DataFrame:
    starts = half_hours(START, days, TZ)
    n = len(starts)
    return pl.DataFrame(
        {
            "seg": [1] * n,
            "interval_start": starts,
            "interval_minutes": [30] * n,
            "import_kwh": (imp * n)[:n],
            "controlled_kwh": [0.0] * n,
            "export_kwh": (exp * n)[:n],
            "spot_per_mwh": ((spot or [50.0]) * n)[:n],
            "loss_factor": [1.02] * n,
        },
        schema_overrides={"interval_minutes": pl.Int32},
    )


def segs(start: date, end: date, cycle_days: int = 30, seg: int = 1) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "seg": [seg],
            "start": [start],
            "end": [end],
            "cycle_days": [cycle_days],
            "concession": [False],
        },
        schema_overrides={"cycle_days": pl.Int32},
    )


kwh = st.lists(st.floats(0, 3, allow_nan=False), min_size=1, max_size=60)


def amounts(c: Context, iv: pl.DataFrame, s: pl.DataFrame) -> dict[str, float]:
    lines = component_lines(c, localise(c, iv), s)
    return dict(lines.group_by("component").agg(pl.sum("amount")).iter_rows())


@SETTINGS
@given(imp=kwh, exp=kwh, days=st.integers(2, 12), data=st.data())
def test_bill_is_additive_over_any_split(
    imp: list[float], exp: list[float], days: int, data: st.DataObject
) -> None:
    split = data.draw(st.integers(1, days - 1))
    cut = START + timedelta(days=split)
    for p in (TOU_FEED, DYN):
        c = ctx(p)
        iv = frame(days, imp, exp)
        whole = amounts(c, iv, segs(START, START + timedelta(days=days)))
        local = iv["interval_start"].dt.convert_time_zone(TZ).dt.date()
        a = amounts(c, iv.filter(local < cut), segs(START, cut))
        b = amounts(c, iv.filter(local >= cut), segs(cut, START + timedelta(days=days)))
        for k, v in whole.items():
            assert abs(v - a.get(k, 0.0) - b.get(k, 0.0)) < 1e-9, (p.id, k)


@SETTINGS
@given(days=st.integers(1, 20))
def test_zero_use_leaves_only_fixed_charges(days: int) -> None:
    for p in (TOU_FEED, BLOCKY, DYN):
        c = ctx(p)
        res = bill_segments(c, frame(days, [0.0], [0.0]), segs(START, START + timedelta(days=days)))
        fixed = {
            "Daily supply charge",
            "Controlled load supply",
            "Network daily supply",
            "Membership fee",
        }
        moving = res.lines.filter(~pl.col("component").is_in(list(fixed)))
        assert moving["amount_ex_tax_cents"].to_list() == [0] * moving.height, p.id
        assert (
            res.lines.filter(pl.col("component").is_in(list(fixed)))["amount_ex_tax_cents"].min()
            > 0
        )  # type: ignore[operator]


@SETTINGS
@given(imp=kwh, extra=kwh, days=st.integers(1, 10))
def test_bill_never_falls_as_consumption_rises(
    imp: list[float], extra: list[float], days: int
) -> None:
    for p in (TOU_FEED, BLOCKY):
        c = ctx(p)
        s = segs(START, START + timedelta(days=days))
        base = frame(days, imp, [0.0])
        more = base.with_columns(pl.col("import_kwh") + pl.Series((extra * len(base))[: len(base)]))
        low = bill_segments(c, base, s).lines["amount_ex_tax_cents"].sum()
        high = bill_segments(c, more, s).lines["amount_ex_tax_cents"].sum()
        assert high >= low, p.id


@SETTINGS
@given(imp=kwh, change=st.integers(1, 9), new_rate=st.decimals("0.01", "0.90", places=4))
def test_rate_change_on_day_d_touches_only_intervals_from_d(
    imp: list[float], change: int, new_rate: Decimal
) -> None:
    d = START + timedelta(days=change)
    text = (
        REF_FLAT
        + f'  {{ effective_from = {d.isoformat()}, value = "{new_rate}", source = "test change" }},\n]\n'
    )
    before, after = parse_product(REF_FLAT + "]\n", "a"), parse_product(text, "b")
    iv = frame(10, imp, [0.0])
    s = segs(START, START + timedelta(days=10))
    pa = priced_intervals(ctx(before), localise(ctx(before), iv), s).collect()
    pb = priced_intervals(ctx(after), localise(ctx(after), iv), s).collect()
    changed = pa.join(pb, on=["interval_start", "component"]).filter(
        pl.col("rate") != pl.col("rate_right")
    )
    assert changed.height == 0 or changed["local_date"].min() >= d  # type: ignore[operator]
    unchanged_before = pa.filter(pl.col("local_date") < d).equals(
        pb.filter(pl.col("local_date") < d)
    )
    assert unchanged_before


REF_FLAT = """
id = "flat"
name = "flat"
kind = "standard"
tax_rate = [{ effective_from = 2000-07-01, value = "0.10", source = "GST Act" }]
[[components]]
type = "energy"
name = "Energy"
rate = [
  { effective_from = 2024-01-01, value = "0.3000", source = "test" },
"""


@settings(max_examples=300, deadline=None)
@given(
    x=st.decimals("-10000", "10000", places=6), rate=st.sampled_from(["0.10", "0.05", "0.2", "0"])
)
def test_vectorised_cents_and_tax_match_the_decimal_rule(x: Decimal, rate: str) -> None:
    df = pl.DataFrame({"a": [float(x)]})
    cents = df.select(cents_expr(pl.col("a"))).item()
    assert Decimal(cents) / 100 == round_cents(float(x))
    ppm = int(Decimal(rate) * 1_000_000)
    tax = pl.DataFrame({"c": [cents]}).select(tax_cents_expr(pl.col("c"), pl.lit(ppm))).item()
    assert Decimal(tax) / 100 == line_tax(Decimal(cents) / 100, Decimal(rate), True)


@SETTINGS
@given(
    imp=kwh,
    exp=kwh,
    spot=st.lists(st.floats(-1000, 2000, allow_nan=False), min_size=1, max_size=30),
)
def test_lines_sum_to_total_and_no_tax_on_feed_in(
    imp: list[float], exp: list[float], spot: list[float]
) -> None:
    for p in (TOU_FEED, DYN, BLOCKY):
        res = bill_segments(
            ctx(p), frame(3, imp, exp, spot), segs(START, START + timedelta(days=3))
        )
        lines = res.lines
        assert (
            lines["amount_inc_tax_cents"].sum()
            == lines["amount_ex_tax_cents"].sum() + lines["tax_cents"].sum()
        )
        feed = lines.filter(~pl.col("taxable"))
        assert feed["tax_cents"].to_list() == [0] * feed.height
        assert set(feed["component"]) <= {
            "Solar feed-in credit",
            "Export (dynamic)",
            "NSW Low Income Household Rebate",
        }
        money = lines.select("amount_ex_tax_cents", "tax_cents", "amount_inc_tax_cents", "quantity")
        assert money.null_count().sum_horizontal().item() == 0


@settings(max_examples=300, deadline=None)
@given(
    reads=st.lists(st.decimals("0", "5", places=4), min_size=2, max_size=60),
    rate=st.decimals("0.001", "0.9", places=3),
)
def test_line_amount_does_not_depend_on_the_order_reads_were_added(
    reads: list[Decimal], rate: Decimal
) -> None:
    """DuckDB's threads add a line's reads in a varying order, so its float kWh sum can differ in
    the last bit between reruns; the money rule (1e-9, then 1e-6, then cents) gives the same
    micro-amount and cents either way, equal to the exact decimal arithmetic."""
    values = [float(r) for r in reads]
    forward, backward = sum(values), sum(reversed(values))
    df = pl.DataFrame({"a": [forward * float(rate), backward * float(rate)]})
    micro = df.select(micro_expr(pl.col("a"))).to_series().to_list()
    exact = (sum(reads) * rate).quantize(Decimal("0.000001"), ROUND_HALF_UP)
    assert micro[0] == micro[1] == int(exact * 1_000_000)
    cents = df.select(cents_expr(pl.col("a"))).to_series().to_list()
    assert cents[0] == cents[1] and Decimal(cents[0]) / 100 == round_cents(forward * float(rate))
