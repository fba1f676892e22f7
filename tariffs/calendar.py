"""Local clock attributes of UTC intervals and time-of-use windows, as polars expressions.

Intervals are stored as UTC starts; tariff windows are written in the site's local clock time
(with daylight saving). :func:`with_local_attributes` converts once and derives ``local_date``,
``minute_of_day`` (of the interval START, local clock), ``month`` and ``day_type`` (holiday beats
weekend beats weekday; holidays from the ``holidays`` package for the product's country and
subdivision). On a daylight-saving change day the local date has 46 or 50 half-hours; each
interval is priced by the window its local start falls in.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import holidays as holidays_lib
import polars as pl

from tariffs.dated import dated_expr, dated_from_expr
from tariffs.product import Holidays, TouPeriod, Window

DAY_TYPE = pl.Enum(["weekday", "weekend", "holiday"])


def holiday_dates(calendar: Holidays, years: Sequence[int]) -> list[date]:
    """Public holidays of ``calendar`` in ``years`` (sorted; none for country ``none``)."""
    if calendar.country.lower() == "none":
        return []
    hol = holidays_lib.country_holidays(
        calendar.country, subdiv=calendar.subdivision, years=list(years)
    )
    return sorted(hol.keys())


def with_local_attributes(
    frame: pl.LazyFrame, timezone: str, holiday_days: Sequence[date]
) -> pl.LazyFrame:
    """Add ``local_date``, ``minute_of_day``, ``month``, ``day_type`` from ``interval_start`` [UTC]."""
    local = pl.col("interval_start").dt.convert_time_zone(timezone)
    frame = frame.with_columns(
        local.dt.date().alias("local_date"),
        (local.dt.hour().cast(pl.Int32) * 60 + local.dt.minute().cast(pl.Int32)).alias(
            "minute_of_day"
        ),
        local.dt.month().cast(pl.Int32).alias("month"),
        local.dt.weekday().cast(pl.Int32).alias("_weekday"),
    )
    day_type = (
        pl.when(pl.col("local_date").is_in(list(holiday_days)))
        .then(pl.lit("holiday", DAY_TYPE))
        .when(pl.col("_weekday") >= 6)
        .then(pl.lit("weekend", DAY_TYPE))
        .otherwise(pl.lit("weekday", DAY_TYPE))
    )
    return frame.with_columns(day_type.alias("day_type")).drop("_weekday")


def window_expr(window: Window) -> pl.Expr:
    """Boolean: the row's local start lies in ``window`` (day type, month, [start, end))."""
    s, e = window.start_minute, window.end_minute
    m = pl.col("minute_of_day")
    in_time = (m >= s) & (m < e) if s < e else (m >= s) | (m < e)
    if s == e:
        in_time = pl.lit(True)
    cond = in_time
    if set(window.days) != {"weekday", "weekend", "holiday"}:
        days = pl.lit(False)
        for d in window.days:
            days = days | (pl.col("day_type") == pl.lit(d, DAY_TYPE))
        cond = cond & days
    if not window.all_months:
        cond = cond & pl.col("month").is_in(list(window.months))
    return cond


def windows_expr(windows: Sequence[Window]) -> pl.Expr:
    """Boolean: the row lies in any of ``windows``."""
    expr = pl.lit(False)
    for w in windows:
        expr = expr | window_expr(w)
    return expr


def period_expr(periods: Sequence[TouPeriod]) -> pl.Expr:
    """Enum of the period names: the first period whose windows hold the row, else the default."""
    dtype = pl.Enum([p.name for p in periods])
    default = next(p for p in periods if p.default)
    expr: pl.Expr = pl.lit(default.name, dtype)
    for p in reversed([p for p in periods if not p.default]):
        expr = pl.when(windows_expr(p.windows)).then(pl.lit(p.name, dtype)).otherwise(expr)
    return expr


def period_rate_exprs(periods: Sequence[TouPeriod], period_col: str) -> tuple[pl.Expr, pl.Expr]:
    """(rate [currency/kWh], rate effective_from) of the row's period on its ``local_date``."""
    rate: pl.Expr = pl.lit(None, pl.Float64)
    since: pl.Expr = pl.lit(None, pl.Date)
    for p in periods:
        hit = pl.col(period_col) == p.name
        rate = pl.when(hit).then(dated_expr(p.rate)).otherwise(rate)
        since = pl.when(hit).then(dated_from_expr(p.rate)).otherwise(since)
    return rate, since


def describe_windows(windows: Sequence[Window]) -> str:
    """Human text of windows, e.g. ``weekday 15:00-21:00 (months 1,2,3)``."""
    parts = []
    for w in windows:
        months = "" if w.all_months else f" (months {','.join(map(str, w.months))})"
        parts.append(f"{'/'.join(w.days)} {w.start}-{w.end}{months}")
    return "; ".join(parts) if parts else "all times"
