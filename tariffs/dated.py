"""Rates that change on a date (OpenFisca style).

A dated parameter is a list of entries ``{effective_from, value, source}``; the value in force on a
day is the latest entry on or before it; ``value = null`` (omitted) retires the parameter; asking
before the first entry (or while retired) is :class:`~tariffs.errors.RateNotFoundError`. A new rate
is a new entry, never an edit. Vectorised form: :func:`dated_expr` turns the entries into one polars
``when/then`` chain over a date column (the as-of join of intervals onto the rate table).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated

import polars as pl
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from tariffs.errors import RateNotFoundError


class DatedEntry(BaseModel):
    """One dated value of a parameter, with where it comes from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    effective_from: date
    value: Decimal | None = None
    source: str = Field(min_length=3, description="publication, clause or URL of the value")


def _check_sorted(entries: list[DatedEntry]) -> list[DatedEntry]:
    if not entries:
        raise ValueError("needs at least one dated entry")
    days = [e.effective_from for e in entries]
    if days != sorted(days) or len(set(days)) != len(days):
        raise ValueError(f"entries must have strictly increasing effective_from dates, got {days}")
    return entries


Dated = Annotated[list[DatedEntry], AfterValidator(_check_sorted)]


def value_on(entries: list[DatedEntry], day: date, name: str) -> Decimal:
    """The value of parameter ``name`` in force on ``day`` [its unit].

    Raises :class:`RateNotFoundError` before the first entry or while retired (``null``).
    """
    found: Decimal | None = None
    seen = False
    for e in entries:
        if e.effective_from <= day:
            found, seen = e.value, True
    if not seen or found is None:
        raise RateNotFoundError(name, day)
    return found


def entry_on(entries: list[DatedEntry], day: date, name: str) -> DatedEntry:
    """The entry in force on ``day`` (same rules as :func:`value_on`)."""
    value_on(entries, day, name)
    return [e for e in entries if e.effective_from <= day][-1]


def change_dates(entries: list[DatedEntry]) -> list[date]:
    """The days on which the parameter takes a new value."""
    return [e.effective_from for e in entries]


def dated_expr(entries: list[DatedEntry], day_col: str = "local_date") -> pl.Expr:
    """Float64 expression: the value in force on each row's ``day_col`` (null if none)."""
    expr: pl.Expr = pl.lit(None, pl.Float64)
    for e in entries:
        val = pl.lit(None, pl.Float64) if e.value is None else pl.lit(float(e.value))
        expr = pl.when(pl.col(day_col) >= pl.lit(e.effective_from)).then(val).otherwise(expr)
    return expr


def dated_from_expr(entries: list[DatedEntry], day_col: str = "local_date") -> pl.Expr:
    """Date expression: the ``effective_from`` of the entry in force on each row (null if none)."""
    expr: pl.Expr = pl.lit(None, pl.Date)
    for e in entries:
        expr = (
            pl.when(pl.col(day_col) >= pl.lit(e.effective_from))
            .then(pl.lit(e.effective_from))
            .otherwise(expr)
        )
    return expr


def first_missing_day(entries: list[DatedEntry], days: list[date]) -> date | None:
    """The first of ``days`` on which the parameter has no value, else ``None``."""
    for d in sorted(days):
        try:
            value_on(entries, d, "")
        except RateNotFoundError:
            return d
    return None
