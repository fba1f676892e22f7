"""Product models: a product is data (QuantLib's instrument), validated once when built.

A product file (TOML) holds ``id``, ``kind`` (standard | dynamic | safe_harbour), currency, tax,
public-holiday calendar and a list of ``[[components]]``, each with a ``type`` (see
:data:`Component`). Every money parameter is a dated list (:mod:`tariffs.dated`). The format is
documented in ``data/formats/products.md``. Parsing takes TEXT (the caller reads the file), so this
module does no I/O.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import tomllib
import zoneinfo
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal

import holidays as holidays_lib
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tariffs.dated import Dated, DatedEntry
from tariffs.errors import ProductFileError

DayType = Literal["weekday", "weekend", "holiday"]
Channel = Literal["import", "controlled_load"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _minutes(hhmm: str) -> int:
    h, _, m = hhmm.partition(":")
    if not (h.isdigit() and m.isdigit()) or not (0 <= int(h) <= 24 and 0 <= int(m) < 60):
        raise ValueError(f"time {hhmm!r} must be HH:MM between 00:00 and 24:00")
    total = int(h) * 60 + int(m)
    if total > 24 * 60:
        raise ValueError(f"time {hhmm!r} is after 24:00")
    return total


def _repeated(items: list[Any]) -> list[Any]:
    """The items that occur more than once in ``items`` (sorted, each once)."""
    return sorted({x for x in items if items.count(x) > 1})


def _check_values(
    entries: list[DatedEntry], what: str, ok: Callable[[Decimal], bool], rule: str
) -> list[DatedEntry]:
    """Raise unless every (non-retired) value of the dated parameter ``what`` satisfies ``ok``."""
    for e in entries:
        if e.value is not None and not ok(e.value):
            raise ValueError(f"{what} must be {rule}; got {e.value} from {e.effective_from}")
    return entries


def _at_least_zero(x: Decimal) -> bool:
    return x >= 0


def _value_in_force(entries: list[DatedEntry], day: date) -> Decimal | None:
    """The value in force on ``day`` (``None`` before the first entry or while retired)."""
    found: Decimal | None = None
    for e in entries:
        if e.effective_from <= day:
            found = e.value
    return found


def _owner(info: ValidationInfo, default: str) -> str:
    """The quoted ``name`` of the model being validated (validated before the money fields)."""
    return repr(info.data.get("name", default))


class Window(_Model):
    """A local-clock window ``[start, end)`` on some day types and months (wraps past midnight).

    ``days`` and ``months`` are non-empty lists without repeats; ``start`` and ``end`` differ (the
    whole day is the default ``00:00``-``24:00``) and ``start`` is before ``24:00``.
    """

    days: list[DayType] = Field(default=["weekday", "weekend", "holiday"], min_length=1)
    start: str = "00:00"
    end: str = "24:00"
    months: list[Annotated[int, Field(ge=1, le=12)]] = Field(
        default=list(range(1, 13)), min_length=1
    )

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        _minutes(v)
        return v

    @property
    def all_months(self) -> bool:
        """True when the window holds in every month of the year."""
        return set(self.months) == set(range(1, 13))

    @field_validator("days", "months")
    @classmethod
    def _no_repeats(cls, v: list[Any], info: ValidationInfo) -> list[Any]:
        """A repeated entry is a typo (``[1, ..., 11, 11]`` is not all twelve months)."""
        dupes = _repeated(v)
        if dupes:
            raise ValueError(f"window {info.field_name} must not repeat, repeated: {dupes} in {v}")
        return v

    @model_validator(mode="after")
    def _non_empty_time(self) -> Window:
        """``start == end`` would be read as the whole day; ask for the explicit form instead."""
        if self.start_minute == 24 * 60:
            raise ValueError(f"window start {self.start!r} must be before 24:00 (use '00:00')")
        if self.start_minute == self.end_minute:
            raise ValueError(
                f"window start and end are both {self.start!r}: a window must not be empty; for"
                " the whole day write start = '00:00', end = '24:00' (the default)"
            )
        return self

    @property
    def start_minute(self) -> int:
        """Start [minutes after local midnight]."""
        return _minutes(self.start)

    @property
    def end_minute(self) -> int:
        """End [minutes after local midnight], exclusive."""
        return _minutes(self.end)


class TouPeriod(_Model):
    """A named time-of-use period: a dated rate and the windows it covers (or the default)."""

    name: str
    rate: Dated
    windows: list[Window] = Field(default_factory=list)
    default: bool = False

    @model_validator(mode="after")
    def _windows_or_default(self) -> TouPeriod:
        if self.default == bool(self.windows):
            raise ValueError(
                f"period {self.name!r}: give windows, or default = true (not both, not neither)"
            )
        return self


def _check_periods(periods: list[TouPeriod], owner: str) -> list[TouPeriod]:
    """Exactly one default period, and period names unique within ``owner`` (the line labels)."""
    n = sum(p.default for p in periods)
    if n != 1:
        raise ValueError(f"{owner}: time-of-use periods need exactly one default period, found {n}")
    dupes = _repeated([p.name for p in periods])
    if dupes:
        raise ValueError(f"{owner}: time-of-use period names must be unique, repeated: {dupes}")
    return periods


TouPeriods = Annotated[list[TouPeriod], Field(min_length=1)]


class Adder(_Model):
    """A named part of a spot-linked price [currency/kWh]: flat dated rate or TOU periods."""

    name: str
    rate: Dated | None = None
    periods: TouPeriods | None = None

    @model_validator(mode="after")
    def _one_form(self) -> Adder:
        if (self.rate is None) == (self.periods is None):
            raise ValueError(f"adder {self.name!r}: give exactly one of rate or periods")
        if self.periods is not None:
            _check_periods(self.periods, f"adder {self.name!r}")
        return self


class SpotPrice(_Model):
    """``clamp(spot/1000 x multiplier x [DLF x MLF] + sum(adders), floor, cap)`` [currency/kWh].

    ``spot`` is the regional price [currency/MWh] of the interval. Fields, not code: Amber-style
    pass-through is multiplier 1 with loss factors and network/environmental/fee/margin adders;
    Octopus Agile is multiplier 2.2, a 16:00-19:00 peak adder and a cap.
    """

    multiplier: Dated
    apply_loss_factors: bool = True
    adders: list[Adder] = Field(default_factory=list)
    floor: Dated | None = None
    cap: Dated | None = None

    @field_validator("adders")
    @classmethod
    def _unique_adders(cls, v: list[Adder]) -> list[Adder]:
        """Adder names label the price's parts in the drill-down, so they must differ."""
        dupes = _repeated([a.name for a in v])
        if dupes:
            raise ValueError(f"spot adder names must be unique, repeated: {dupes}")
        return v

    @model_validator(mode="after")
    def _cap_not_below_floor(self) -> SpotPrice:
        """Where both are in force, ``cap >= floor`` (else the clamp has no meaning)."""
        if self.floor is None or self.cap is None:
            return self
        for day in sorted({e.effective_from for e in self.floor + self.cap}):
            lo, hi = _value_in_force(self.floor, day), _value_in_force(self.cap, day)
            if lo is not None and hi is not None and hi < lo:
                raise ValueError(
                    f"spot cap {hi} is below spot floor {lo} in force from {day};"
                    " the cap must be at least the floor"
                )
        return self


class _PriceForm(_Model):
    """Exactly one of: flat dated ``rate``, TOU ``periods``, spot-linked ``spot``."""

    name: str
    rate: Dated | None = None
    periods: TouPeriods | None = None
    spot: SpotPrice | None = None

    @model_validator(mode="after")
    def _one_form(self) -> _PriceForm:
        given = [x is not None for x in (self.rate, self.periods, self.spot)]
        if sum(given) != 1:
            raise ValueError(f"{self.name!r}: give exactly one of rate, periods or spot")
        if self.periods is not None:
            _check_periods(self.periods, repr(self.name))
        return self


class DailySupply(_Model):
    """Fixed charge per day of supply [currency/day], exact day count."""

    type: Literal["daily_supply"]
    name: str = "Daily supply charge"
    rate: Dated

    @field_validator("rate")
    @classmethod
    def _not_negative(cls, v: list[DatedEntry], info: ValidationInfo) -> list[DatedEntry]:
        """A negative supply charge is a typo (credits are concessions)."""
        return _check_values(
            v, f"{_owner(info, 'daily_supply')} rate", _at_least_zero, "zero or more [currency/day]"
        )


class Energy(_PriceForm):
    """Usage charge on a channel [currency/kWh]: flat, TOU or dynamic (spot-linked)."""

    type: Literal["energy"]
    channel: Channel = "import"


class FeedIn(_PriceForm):
    """Credit for exported kWh [currency/kWh paid to the customer]; may go negative; no tax."""

    type: Literal["feed_in"]
    floor: Dated | None = None


class Block(_Model):
    """One tier: kWh up to ``up_to_kwh`` (cumulative, per block period; None = the rest)."""

    up_to_kwh: Decimal | None = None
    rate: Dated


class BlockEnergy(_Model):
    """Inclining (or declining) block tariff; thresholds per day, calendar month or billing period.

    Month and billing-period thresholds are prorated by days supplied in the piece; a piece is also
    split where any tier rate changes (each part gets its prorated share of the threshold).
    """

    type: Literal["block_energy"]
    name: str = "Energy (block)"
    channel: Channel = "import"
    period: Literal["day", "month", "billing_period"]
    blocks: list[Block] = Field(min_length=1)

    @model_validator(mode="after")
    def _thresholds(self) -> BlockEnergy:
        ups = [b.up_to_kwh for b in self.blocks]
        if ups[-1] is not None or any(u is None for u in ups[:-1]):
            raise ValueError("every block but the last needs up_to_kwh; the last must omit it")
        vals = [u for u in ups[:-1] if u is not None]
        if vals != sorted(vals) or len(set(vals)) != len(vals) or (vals and vals[0] <= 0):
            raise ValueError(f"block thresholds must be positive and increasing, got {vals}")
        return self


class Demand(_Model):
    """Demand charge on the mean of the ``peaks`` highest interval kW in the window, per month.

    kW = kWh x 60 / interval_minutes. ``per_kw_month``: rate x kW x (days supplied in the month /
    days in the month); ``per_kw_day``: rate x kW x days supplied in the month.
    """

    type: Literal["demand"]
    name: str = "Demand charge"
    windows: list[Window] = Field(default_factory=lambda: [Window()])
    peaks: int = Field(default=1, ge=1)
    unit: Literal["per_kw_month", "per_kw_day"] = "per_kw_month"
    rate: Dated

    @field_validator("rate")
    @classmethod
    def _not_negative(cls, v: list[DatedEntry], info: ValidationInfo) -> list[DatedEntry]:
        """A negative rate would pay the customer for a higher peak."""
        return _check_values(
            v, f"{_owner(info, 'demand')} rate", _at_least_zero, "zero or more [currency/kW]"
        )


class MinimumCharge(_Model):
    """Tops the bill's taxable charges up to ``rate`` per billing period (prorated by days)."""

    type: Literal["minimum_charge"]
    name: str = "Minimum charge top-up"
    rate: Dated

    @field_validator("rate")
    @classmethod
    def _not_negative(cls, v: list[DatedEntry], info: ValidationInfo) -> list[DatedEntry]:
        """A negative minimum never tops anything up."""
        return _check_values(
            v,
            f"{_owner(info, 'minimum_charge')} rate",
            _at_least_zero,
            "zero or more [currency/cycle]",
        )


class Discount(_Model):
    """A fraction off the named components' charges (e.g. 0.07 = 7 % off usage); taxable."""

    type: Literal["discount"]
    name: str = "Discount"
    fraction: Dated
    applies_to: list[str] = Field(min_length=1, description="component names")

    @field_validator("fraction")
    @classmethod
    def _fraction(cls, v: list[DatedEntry], info: ValidationInfo) -> list[DatedEntry]:
        """0.05 is 5 % off; ``5`` (500 %) or a negative fraction (a surcharge) is a typo."""
        return _check_values(
            v,
            f"discount {_owner(info, 'discount')} fraction",
            lambda x: 0 <= x <= 1,
            "between 0 and 1 (0.05 = 5 % off)",
        )


class Concession(_Model):
    """A daily credit [currency/day] for customers flagged ``concession``; carries no tax."""

    type: Literal["concession"]
    name: str = "Concession rebate"
    rate: Dated

    @field_validator("rate")
    @classmethod
    def _not_negative(cls, v: list[DatedEntry], info: ValidationInfo) -> list[DatedEntry]:
        """The rebate is a credit of ``rate`` a day; a negative one would be an untaxed charge."""
        return _check_values(
            v, f"{_owner(info, 'concession')} rate", _at_least_zero, "zero or more [currency/day]"
        )


DISCOUNTABLE = (DailySupply, Energy, BlockEnergy, Demand)
"""Component types a discount may apply to: charges for imported energy and supply."""

Component = Annotated[
    DailySupply | Energy | FeedIn | BlockEnergy | Demand | MinimumCharge | Discount | Concession,
    Field(discriminator="type"),
]


class Holidays(_Model):
    """Public-holiday calendar (``holidays`` package country and subdivision codes).

    ``country = "none"`` means no public holidays (every day is a weekday or weekend). The
    default (a product without ``holidays``) is ``AU`` with no subdivision: national holidays
    only, none of the states' own (e.g. not NSW's Labour Day or Bank Holiday).
    """

    country: str = "AU"
    subdivision: str | None = None

    @model_validator(mode="after")
    def _known_calendar(self) -> Holidays:
        """The country and subdivision must be ones the ``holidays`` package can build."""
        if self.country.lower() == "none":
            if self.subdivision is not None:
                raise ValueError(
                    f"holidays: country 'none' takes no subdivision, got {self.subdivision!r}"
                )
            return self
        supported = holidays_lib.list_supported_countries()
        if self.country not in supported:
            raise ValueError(
                f"holidays: country {self.country!r} is not a country code of the holidays"
                " package (e.g. 'AU', 'GB'), nor 'none'"
            )
        try:
            holidays_lib.country_holidays(self.country, subdiv=self.subdivision)
        except NotImplementedError:
            raise ValueError(
                f"holidays: subdivision {self.subdivision!r} is not a subdivision of"
                f" {self.country!r}; known: {supported[self.country]}"
            ) from None
        return self


@functools.cache
def _iana_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


class ReEntry(_Model):
    """Terms on which a dynamic customer may come back to this safe-harbour product."""

    notice_days: int = Field(ge=0)
    lockout_days: int = Field(ge=0)
    fee: Decimal = Field(ge=0, description="one-off fee [currency]")


class SafeHarbourTerms(_Model):
    """Risk premium included in the rates (priced by the risk engine) and re-entry terms."""

    risk_premium_per_kwh: Dated
    re_entry: ReEntry
    price_fixed_months: int = Field(default=12, ge=1)


class Product(_Model):
    """A retail product: kind, currency, tax, calendar and its bill components."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    name: str
    kind: Literal["standard", "dynamic", "safe_harbour"]
    currency: str = Field(default="AUD", pattern=r"^[A-Z]{3}$")
    tax_name: str = "GST"
    tax_rate: Dated
    timezone: str | None = Field(default=None, description="overrides the site's clock for TOU")
    holidays: Holidays = Holidays()
    region: str | None = None
    description: str = ""
    safe_harbour: SafeHarbourTerms | None = None
    components: list[Component] = Field(min_length=1)
    version: str = Field(default="", description="content hash of the file, set by the parser")

    @field_validator("tax_rate")
    @classmethod
    def _tax_fraction(cls, v: list[DatedEntry], info: ValidationInfo) -> list[DatedEntry]:
        """A fraction: 0.10 is 10 %; ``10`` (a percentage) would multiply every line by 11."""
        tax = info.data.get("tax_name", "tax")
        return _check_values(
            v, f"tax_rate ({tax})", lambda x: 0 <= x < 1, "a fraction in [0, 1) (0.10 = 10 %)"
        )

    @field_validator("timezone")
    @classmethod
    def _iana_timezone(cls, v: str | None) -> str | None:
        """An IANA zone name known to the time-zone database (the billing clock needs it)."""
        if v is None or v in _iana_zones():
            return v
        close = difflib.get_close_matches(v, sorted(_iana_zones()), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"timezone {v!r} is not an IANA time zone name{hint}")

    @model_validator(mode="after")
    def _consistent(self) -> Product:
        names = [c.name for c in self.components]
        dupes = _repeated(names)
        if dupes:
            raise ValueError(f"component names must be unique, repeated: {dupes}")
        by_name = {c.name: c for c in self.components}
        for c in self.components:
            if isinstance(c, Discount):
                unknown = sorted(set(c.applies_to) - set(names))
                if unknown:
                    raise ValueError(f"discount {c.name!r} applies to unknown components {unknown}")
                bad = [
                    f"{n!r} ({by_name[n].type})"
                    for n in c.applies_to
                    if not isinstance(by_name[n], DISCOUNTABLE)
                ]
                if bad:
                    raise ValueError(
                        f"discount {c.name!r} applies to {', '.join(bad)}: a discount may apply"
                        " only to charges for imported energy or supply (daily_supply, energy,"
                        " block_energy, demand), not to feed_in, discount, minimum_charge or"
                        " concession components"
                    )
        spot_usage = [
            c.name for c in self.components if isinstance(c, Energy) and c.spot is not None
        ]
        if self.kind == "dynamic" and not spot_usage:
            raise ValueError(
                "a dynamic product needs a spot-linked energy (import) component; a spot-linked"
                " feed_in alone does not make a product dynamic"
            )
        if self.kind == "safe_harbour" and self.safe_harbour is None:
            raise ValueError("a safe_harbour product needs a [safe_harbour] table")
        if self.kind == "safe_harbour" and spot_usage:
            raise ValueError(
                f"a safe_harbour product must not price usage from the spot price (the retailer"
                f" carries the wholesale risk), but these energy components are spot-linked:"
                f" {spot_usage}"
            )
        return self

    @property
    def needs_spot(self) -> bool:
        """True when any component is priced from the spot price."""
        return any(getattr(c, "spot", None) is not None for c in self.components)

    def first_day(self) -> date:
        """The earliest effective_from of the tax rate (bills before it are refused)."""
        return self.tax_rate[0].effective_from


def product_from_dict(data: dict[str, Any], source: str, version: str = "") -> Product:
    """Validate ``data`` as a product; errors become :class:`ProductFileError` naming the key."""
    try:
        product = Product.model_validate({**data, "version": version})
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        raise ProductFileError(source, key, f"{err['msg']}{more}") from exc
    return product


def parse_product(text: str, source: str) -> Product:
    """Parse product TOML ``text`` (read by the caller from ``source``, named in errors)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProductFileError(source, "(syntax)", str(exc)) from exc
    version = hashlib.sha256(text.encode()).hexdigest()[:12]
    return product_from_dict(data, source, version)
