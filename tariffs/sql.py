"""The per-interval bill calculus as DuckDB SQL text generated from a product (the fast path).

Same arithmetic as :mod:`tariffs.calculus` (the reference implementation, which the tests hold
this to), for energy and feed-in components (flat, TOU and spot-linked), in the form of ONE pass
over the reads (:func:`channel_pass`): everything that depends only on the instant (TOU period,
rate in force, spot multiplier, adders, floor, cap) is computed once per clock instant, channel
and region in a small clock table; the reads join it on one integer key and are summed per
segment and clock key. Only validated numbers and dates from the product model are written into
the text (Decimal -> numeric literal, date -> DATE literal); names never are (periods are
numbered and named after the query).

The clock SQL reads ``_kx(ts_us, local_date, minute_of_day, month, day_code, sfx,
spot_per_mwh, ...)`` (day_code 0 weekday, 1 weekend, 2 holiday; ``sfx`` a :data:`SUFFIX_CODE`),
which :mod:`settlement.billing_sql` builds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from tariffs.dated import DatedEntry
from tariffs.product import Adder, Energy, FeedIn, TouPeriod, Window

DAY_CODES = {"weekday": 0, "weekend": 1, "holiday": 2}
SUFFIX = {"import": "E1", "controlled_load": "E2", "export": "B1"}
SUFFIX_CODE = {"E1": 0, "E2": 1, "B1": 2}  # ``sc.sfx`` in the channel pass


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
    if not w.all_months:
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


@dataclass(frozen=True)
class PassComponent:
    """How to read one energy or feed-in component back from the channel pass (see
    :func:`channel_pass`): fixed rates from its clock columns ``d{i}``/``r{i}``/``f{i}`` (period
    index, rate, rate-from) by clock key; spot-linked ones from the pass's amount columns of its
    slot ``slot`` on its channel."""

    index: int  # position among the product's components (the line order)
    name: str
    labels: list[str]
    varying: bool
    sign: float
    taxable: bool
    suffix: str
    slot: int = -1  # spot-linked: its slot among its channel's spot-linked components
    loss_factors: bool = False  # spot-linked: the wholesale part is scaled by DLF x MLF


@dataclass(frozen=True)
class ChannelPass:
    """SQL for billing every energy and feed-in component in ONE pass over the reads.

    ``clock_sql`` selects from ``_kx`` (one row per clock instant, meter interval length,
    region and channel: ``ts_us, local_date, minute_of_day, month, day_code, sfx, spot_per_mwh``
    and the join ``key``) the clock table the reads join: ``key``, ``dno`` (local date as days
    since 1970), ``ck`` (numbering the distinct tuples of channel, fixed-rate period, rate, rate
    start, spot adders and missing spot price, so reads are summed per ``ck``, not per instant),
    the fixed-rate columns ``d{i}, r{i}, f{i}`` (NULL on other channels' rows), ``nospot``, and
    per spot slot ``j``: ``sb{j}`` (spot / 1000 x multiplier), ``sa{j}`` (the adders),
    ``sf{j}``, ``sc{j}`` (floor and cap), ``sfi{j}`` (feed-in floor) and ``slf{j}`` (loss
    factors apply). A spot-linked price is then
    ``clamp(sb x [loss factor] + sa)``; :func:`spot_amount_sql` gives its per-read sum.
    """

    clock_sql: str
    components: list[PassComponent]
    suffixes: list[str]
    slots: int  # spot slots per channel (0 when no component is spot-linked)
    clamped: list[bool]  # per slot: some component of the slot has a floor or cap

    @property
    def needs_spot(self) -> bool:
        """True when some component is spot-linked."""
        return self.slots > 0


def spot_amount_sql(slot: int, clamp: bool) -> list[str]:
    """Aggregates of the pass for spot slot ``slot``: with ``clamp``, the clamped per-read
    amount ``amount{slot}``; without, the wholesale part ``sumb{slot}`` (to be scaled by the
    segment's loss factor, or 1; the adders' part is ``sa`` x quantity per clock key, since
    ``sa`` is part of the key). DuckDB's ``greatest``/``least`` ignore NULL bounds, as the
    reference ignores a floor or cap not in force."""
    j = slot
    if not clamp:
        return [f"{exact_sum(f'v.kwh * kc.sb{j}')} AS sumb{j}"]
    x = f"(kc.sb{j} * CASE WHEN kc.slf{j} THEN sc.loss_factor ELSE 1.0 END + kc.sa{j})"
    clamped = f"v.kwh * greatest(least(greatest({x}, kc.sf{j}), kc.sc{j}), kc.sfi{j})"
    return [f"{exact_sum(clamped)} AS amount{j}"]


# Sums of the pass in units of 1e-13 (kWh or currency): each term is rounded to a whole unit
# and the integers added (exact, in any order), so a sum is the same to the last bit however
# DuckDB splits the rows between threads (float sums were not: 38 of 100,000 accounts' daily
# sums differed in their last bits between two runs). Rounding each term moves a month of
# 8,928 five-minute terms by at most 4.5e-10, below the bill's 1e-9 step; a term may reach
# 9.2e5 (kWh or currency) before the integer overflows.
EXACT_SCALE = 10_000_000_000_000


def exact_sum(expr: str) -> str:
    """SQL: the sum of ``expr`` (a DOUBLE expression written by this code) taken in whole
    units of 1e-13 and returned as DOUBLE (see :data:`EXACT_SCALE`)."""
    return f"(sum((({expr}) * {EXACT_SCALE}.0)::BIGINT)::DOUBLE / {EXACT_SCALE}.0)"


def channel_pass(components: Sequence[object]) -> ChannelPass:
    """The one-pass form of a product's energy and feed-in components (see :class:`ChannelPass`).

    Same arithmetic as the polars reference (:mod:`tariffs.calculus`): fixed rates (flat or TOU,
    a feed-in floor applied to the rate) are summed per period and rate in force; spot-linked
    prices are computed per read (or, when no floor or cap can bind, as one linear sum of the
    wholesale part plus the keyed adders) and summed per segment.
    """
    firsts: list[str] = []
    cols: list[str] = []
    keys: list[str] = []
    specs: list[PassComponent] = []
    spot_arms: dict[int, dict[str, list[str]]] = {}
    bounded: dict[int, bool] = {}  # per slot: some component of it has a floor or cap
    for i, comp in enumerate(components):
        if not isinstance(comp, Energy | FeedIn):
            continue
        channel = "export" if isinstance(comp, FeedIn) else comp.channel
        sfx = SUFFIX[channel]
        code = SUFFIX_CODE[sfx]
        floor = comp.floor if isinstance(comp, FeedIn) else None
        spot = comp.spot
        sign, taxable = (-1.0, False) if isinstance(comp, FeedIn) else (1.0, True)
        if spot is not None:
            slot = sum(1 for s in specs if s.varying and s.suffix == sfx)
            adders = " + ".join(_adder_sql(a) for a in spot.adders) or "0.0"
            none = "NULL::DOUBLE"
            arms = spot_arms.setdefault(slot, {})
            bounded[slot] = bounded.get(slot, False) or any(
                b is not None for b in (spot.floor, spot.cap, floor)
            )
            arms[str(code)] = [
                f"spot_per_mwh / 1000.0 * {dated_sql(spot.multiplier)}",
                f"({adders})",
                dated_sql(spot.floor) if spot.floor else none,
                dated_sql(spot.cap) if spot.cap else none,
                dated_sql(floor) if floor else none,
                "TRUE" if spot.apply_loss_factors else "FALSE",
            ]
            specs.append(PassComponent(i, comp.name, ["spot-linked"], True, sign, taxable, sfx, slot,
                                       spot.apply_loss_factors))  # fmt: skip
            continue
        if comp.periods is not None:
            labels = [p.name for p in comp.periods]
            firsts.append(
                f"CASE WHEN sfx = {code} THEN {period_index_sql(comp.periods)} END AS d{i}"
            )
            rate = _by_period(comp.periods, f"d{i}", "rate")
            since = _by_period(comp.periods, f"d{i}", "since")
        else:
            assert comp.rate is not None
            labels = [""]
            firsts.append(f"CASE WHEN sfx = {code} THEN 0 END AS d{i}")
            rate, since = dated_sql(comp.rate), dated_from_sql(comp.rate)
        if floor is not None:
            f = dated_sql(floor)
            rate = f"(CASE WHEN {rate} < {f} THEN {f} ELSE {rate} END)"
        cols += [
            f"CASE WHEN sfx = {code} THEN {rate} END AS r{i}",
            f"CASE WHEN sfx = {code} THEN {since} END AS f{i}",
        ]
        keys.append(f"d{i}, f{i}, r{i}")
        specs.append(PassComponent(i, comp.name, labels, False, sign, taxable, sfx))
    names = ("sb", "sa", "sf", "sc", "sfi", "slf")
    for j in sorted(spot_arms):
        arms = spot_arms[j]
        for n, name in enumerate(names):
            whens = " ".join(f"WHEN {c} THEN {v[n]}" for c, v in arms.items())
            cols.append(f"CASE sfx {whens} END AS {name}{j}")
    nospot = "spot_per_mwh IS NULL" if spot_arms else "FALSE"
    # the adders are few values (TOU network rates, constants): keyed, they leave the pass
    order = ", ".join(["sfx", *keys, *[f"sa{j}" for j in sorted(spot_arms)], "nospot"])
    clock_sql = (
        f"WITH k0 AS (SELECT *{''.join(', ' + f for f in firsts)}, {nospot} AS nospot FROM _kx), "
        f"k1 AS (SELECT *{''.join(', ' + c for c in cols)} FROM k0) "
        f"SELECT *, (local_date - DATE '1970-01-01')::INTEGER AS dno, "
        f"dense_rank() OVER (ORDER BY {order}) - 1 AS ck FROM k1"
    )
    suffixes = ["E1", *sorted({s.suffix for s in specs} - {"E1"})]
    clamped = [bounded[j] for j in sorted(spot_arms)]
    return ChannelPass(clock_sql, specs, suffixes, len(spot_arms), clamped)


def sql_capable(components: Sequence[object]) -> bool:
    """True when every per-interval component has an SQL form (blocks and demand do not yet)."""
    from tariffs.product import BlockEnergy, Demand

    return not any(isinstance(c, BlockEnergy | Demand) for c in components)
