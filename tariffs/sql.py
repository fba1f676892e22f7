"""The per-interval bill calculus as DuckDB SQL text generated from a product (the fast path).

Same arithmetic as :mod:`tariffs.calculus` (the reference implementation, which the tests hold
this to), for energy and feed-in components (flat, TOU and spot-linked): one aggregate query per
component over reads joined to a small clock table and the interval prices, grouped per segment,
TOU period and rate in force. Only validated numbers and dates from the product model are written
into the text (Decimal -> numeric literal, date -> DATE literal); names never are (periods are
numbered and named after the query).

The query expects these relations: ``_segs(seg, nmi, region, loss_factor, utc_from, utc_to)``,
``_clock(ts_us, local_date, minute_of_day, month, day_code)`` (day_code 0 weekday, 1 weekend,
2 holiday), ``_prices(region, ts_us, interval_minutes, spot_per_mwh)`` and the reads ``{reads}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from tariffs.dated import DatedEntry
from tariffs.product import Adder, Energy, FeedIn, SpotPrice, TouPeriod, Window

DAY_CODES = {"weekday": 0, "weekend": 1, "holiday": 2}
SUFFIX = {"import": "E1", "controlled_load": "E2", "export": "B1"}


def _num(v: Decimal) -> str:
    return f"CAST({format(Decimal(v), 'f')} AS DOUBLE)"


def _date(d: date) -> str:
    return f"DATE '{d.isoformat()}'"


def dated_sql(entries: Sequence[DatedEntry], day: str = "local_date") -> str:
    """CASE: the value in force on ``day`` (NULL before the first entry or while retired)."""
    arms = " ".join(
        f"WHEN {day} >= {_date(e.effective_from)} THEN {'NULL' if e.value is None else _num(e.value)}"
        for e in reversed(entries)
    )
    return f"(CASE {arms} ELSE NULL END)"


def dated_from_sql(entries: Sequence[DatedEntry], day: str = "local_date") -> str:
    """CASE: the effective_from of the entry in force on ``day``."""
    arms = " ".join(
        f"WHEN {day} >= {_date(e.effective_from)} THEN {_date(e.effective_from)}"
        for e in reversed(entries)
    )
    return f"(CASE {arms} ELSE NULL END)"


def window_sql(w: Window) -> str:
    """Boolean: local interval start inside window ``w``."""
    s, e = w.start_minute, w.end_minute
    if s == e:
        parts = ["TRUE"]
    elif s < e:
        parts = [f"(minute_of_day >= {s} AND minute_of_day < {e})"]
    else:
        parts = [f"(minute_of_day >= {s} OR minute_of_day < {e})"]
    if set(w.days) != set(DAY_CODES):
        parts.append(f"day_code IN ({', '.join(str(DAY_CODES[d]) for d in w.days)})")
    if len(w.months) != 12:
        parts.append(f"month IN ({', '.join(str(int(m)) for m in w.months)})")
    return "(" + " AND ".join(parts) + ")"


def period_index_sql(periods: Sequence[TouPeriod]) -> str:
    """CASE: index of the first period whose windows hold the row, else the default's index."""
    default = next(i for i, p in enumerate(periods) if p.default)
    arms = []
    for i, p in enumerate(periods):
        if not p.default:
            arms.append(f"WHEN {' OR '.join(window_sql(w) for w in p.windows)} THEN {i}")
    return f"(CASE {' '.join(arms)} ELSE {default} END)" if arms else str(default)


def _by_period(periods: Sequence[TouPeriod], idx: str, fn: str) -> str:
    f = dated_sql if fn == "rate" else dated_from_sql
    arms = " ".join(f"WHEN {idx} = {i} THEN {f(p.rate)}" for i, p in enumerate(periods))
    return f"(CASE {arms} ELSE NULL END)"


def _adder_sql(a: Adder) -> str:
    if a.rate is not None:
        return dated_sql(a.rate)
    assert a.periods is not None
    return _by_period(a.periods, period_index_sql(a.periods), "rate")


def _clamp_sql(x: str, floor: Sequence[DatedEntry] | None, cap: Sequence[DatedEntry] | None) -> str:
    if floor is not None:
        f = dated_sql(floor)
        x = f"(CASE WHEN {x} < {f} THEN {f} ELSE {x} END)"
    if cap is not None:
        c = dated_sql(cap)
        x = f"(CASE WHEN {x} > {c} THEN {c} ELSE {x} END)"
    return x


def spot_sql(spot: SpotPrice) -> str:
    """Per-interval spot-linked price [currency/kWh] (NULL where the spot price is missing)."""
    price = f"(spot_per_mwh / 1000.0 * {dated_sql(spot.multiplier)}"
    if spot.apply_loss_factors:
        price += " * loss_factor"
    price += "".join(f" + {_adder_sql(a)}" for a in spot.adders) + ")"
    return _clamp_sql(price, spot.floor, spot.cap)


@dataclass(frozen=True)
class ComponentQuery:
    """One component's aggregate query and how to read its rows back."""

    sql: str
    labels: list[str]  # detail label by index
    varying: bool  # spot-linked: one line per segment, rate = amount / quantity
    sign: float  # -1 for feed-in credits
    taxable: bool
    suffix: str = "E1"  # the meter channel it reads


def _clamp_cols(x: str, floor: bool, cap: bool) -> str:
    if floor:
        x = f"(CASE WHEN {x} < kc.floor THEN kc.floor ELSE {x} END)"
    if cap:
        x = f"(CASE WHEN {x} > kc.cap THEN kc.cap ELSE {x} END)"
    return x


def component_query(comp: Energy | FeedIn, reads: str) -> ComponentQuery:
    """Aggregate query of one energy or feed-in component (see module docstring).

    Everything that depends only on the instant (TOU period, rate in force, spot multiplier,
    adders, floor, cap) is computed once per clock instant in ``kc``; the per-read work is a join
    and a sum.
    """
    channel = "export" if isinstance(comp, FeedIn) else comp.channel
    floor = comp.floor if isinstance(comp, FeedIn) else None
    spot = comp.spot
    if comp.periods is not None:
        labels = [p.name for p in comp.periods]
        idx = period_index_sql(comp.periods)
        rate = _by_period(comp.periods, "didx", "rate")
        since = _by_period(comp.periods, "didx", "since")
    elif comp.rate is not None:
        labels, idx = [""], "0"
        rate, since = dated_sql(comp.rate), dated_from_sql(comp.rate)
    else:
        assert spot is not None
        labels, idx, rate, since = ["spot-linked"], "0", "NULL::DOUBLE", "NULL::DATE"
    if spot is not None:
        adders = " + ".join(_adder_sql(a) for a in spot.adders) or "0.0"
        cols = (
            f"{dated_sql(spot.multiplier)} AS mult, ({adders}) AS adders, "
            f"{dated_sql(spot.floor) if spot.floor else 'NULL::DOUBLE'} AS floor, "
            f"{dated_sql(spot.cap) if spot.cap else 'NULL::DOUBLE'} AS cap"
        )
    else:
        cols = "NULL::DOUBLE AS mult, NULL::DOUBLE AS adders, NULL::DOUBLE AS floor, NULL::DOUBLE AS cap"
    kc = f"""
kc0 AS MATERIALIZED (SELECT *, {idx} AS didx FROM _clock),
kc AS MATERIALIZED (
    SELECT ts_us, local_date, didx, {rate} AS rate, {since} AS rate_from,
           {dated_sql(floor) if floor else "NULL::DOUBLE"} AS fi_floor, {cols}
    FROM kc0)"""
    joins = f"""
FROM _segs s
JOIN {reads} m ON m.suffix = '{SUFFIX[channel]}' AND m.quality <> 'N' AND m.nmi = s.nmi
     AND m.interval_start >= s.utc_from AND m.interval_start < s.utc_to
JOIN kc ON kc.ts_us = epoch_us(m.interval_start)"""
    if spot is None:
        sql = f"""WITH {kc}
SELECT s.seg, kc.didx, any_value(kc.rate) AS rate, kc.rate_from, sum(m.kwh) AS quantity,
       NULL::DOUBLE AS amount_raw, min(kc.local_date) AS date_from, max(kc.local_date) AS date_to,
       count(*) AS n_intervals, count(*) FILTER (WHERE kc.rate IS NULL) AS n_unpriced,
       count(*) FILTER (WHERE m.quality = 'E') AS n_estimated, min(m.interval_minutes) AS minutes,
       sum(m.interval_minutes)::BIGINT AS covered_minutes
{joins}
GROUP BY s.seg, kc.didx, kc.rate_from"""
    else:
        price = "(p.spot_per_mwh / 1000.0 * kc.mult"
        price += " * s.loss_factor" if spot.apply_loss_factors else ""
        price = _clamp_cols(price + " + kc.adders)", spot.floor is not None, spot.cap is not None)
        if floor is not None:
            price = f"(CASE WHEN {price} < kc.fi_floor THEN kc.fi_floor ELSE {price} END)"
        sql = f"""WITH {kc}
SELECT s.seg, 0 AS didx, NULL::DOUBLE AS rate, NULL::DATE AS rate_from, sum(m.kwh) AS quantity,
       sum(m.kwh * {price}) AS amount_raw, min(kc.local_date) AS date_from,
       max(kc.local_date) AS date_to, count(*) AS n_intervals,
       count(*) FILTER (WHERE p.spot_per_mwh IS NULL) AS n_unpriced,
       count(*) FILTER (WHERE m.quality = 'E') AS n_estimated, min(m.interval_minutes) AS minutes,
       sum(m.interval_minutes)::BIGINT AS covered_minutes
{joins}
LEFT JOIN _prices p ON p.region = s.region AND p.ts_us = kc.ts_us
     AND p.interval_minutes = m.interval_minutes
GROUP BY s.seg"""
    return ComponentQuery(sql, labels, spot is not None, -1.0 if isinstance(comp, FeedIn) else 1.0,
                          not isinstance(comp, FeedIn), SUFFIX[channel])  # fmt: skip


def sql_capable(components: Sequence[object]) -> bool:
    """True when every per-interval component has an SQL form (blocks and demand do not yet)."""
    from tariffs.product import BlockEnergy, Demand

    return not any(isinstance(c, BlockEnergy | Demand) for c in components)
