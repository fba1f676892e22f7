"""Shared drivers of the synthetic demo year: calendar, weather, clear-sky solar and 5-minute prices.

Everything is a vectorised numpy function of its arguments and an explicit
:class:`numpy.random.Generator`; nothing reads a clock or a file. Temperature is the shared driver:
it raises household cooling/heating load and the price-spike hazard, so the demo has the
price-volume correlation that makes retail hedging costly (DOMAIN.md section 6).

Time: interval ``i`` of a grid starts at ``start`` 00:00 NEM market time (UTC+10) plus
``i x minutes``. Household behaviour follows the local clock (``Australia/Sydney``, with daylight
saving); the sun follows solar time, derived from market time and longitude.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np
import polars as pl

from settlement.demo.config import PriceConfig

MARKET_UTC_OFFSET_H = 10
"""NEM market time is UTC+10 all year (DOMAIN.md section 1)."""


def ar1(shocks: np.ndarray, coef: float) -> np.ndarray:
    """The AR(1) path ``x[t] = coef * x[t-1] + shocks[t]`` with ``x[-1] = 0``, vectorised.

    Blocked scan: within blocks of ``B`` steps the recursion is a scaled cumulative sum
    (``coef ** -B`` kept below ~1e6 so the scaling loses no precision); the block-end values
    follow an AR(1) with coefficient ``coef ** B``, solved the same way, recursively.
    (``scipy.signal.lfilter([1], [1, -coef], shocks)`` computes the same, but importing
    scipy.signal costs seconds.)
    """
    n = shocks.size
    if coef == 0.0 or n <= 1:
        return shocks.astype(np.float64, copy=True)
    block = int(min(256, max(2, np.floor(6.0 / -np.log10(abs(coef))))))
    nb = -(-n // block)
    padded = np.zeros(nb * block)
    padded[:n] = shocks
    e = padded.reshape(nb, block)
    powers = coef ** np.arange(block, dtype=np.float64)
    local = np.cumsum(e / powers, axis=1) * powers  # AR(1) inside each block from 0
    ends = ar1(local[:, -1], coef**block) if nb > 1 else local[:, -1]
    carry = np.concatenate([[0.0], ends[:-1]])  # value at the end of the previous block
    out = local + carry[:, None] * (coef * powers)[None, :]
    return out.reshape(-1)[:n]


@dataclass(frozen=True)
class Calendar:
    """Per-interval time attributes of a regular grid (interval starts).

    Attributes
    ----------
    start : first market day.
    minutes : interval length [min].
    market_hour : hour of day in market time (UTC+10) [h], fractional.
    local_hour : hour of day on the local clock [h], fractional (daylight saving applied).
    local_weekend : True on local Saturdays and Sundays.
    day : market-day index from ``start``.
    day_of_year : 1-based day of year of the market day.
    month : index of the market month from the first month of the period (0, 1, ...).
    """

    start: date
    minutes: int
    market_hour: np.ndarray
    local_hour: np.ndarray
    local_weekend: np.ndarray
    day: np.ndarray
    day_of_year: np.ndarray
    month: np.ndarray

    @property
    def size(self) -> int:
        """Number of intervals."""
        return int(self.day.size)

    @property
    def per_day(self) -> int:
        """Intervals per market day."""
        return 1440 // self.minutes

    @property
    def hours(self) -> float:
        """Interval length [h]."""
        return self.minutes / 60.0

    def window(self, lo: int, hi: int) -> Calendar:
        """The intervals ``lo:hi`` (whole days) as a calendar of their own (same day indices)."""
        return Calendar(
            start=self.start,
            minutes=self.minutes,
            market_hour=self.market_hour[lo:hi],
            local_hour=self.local_hour[lo:hi],
            local_weekend=self.local_weekend[lo:hi],
            day=self.day[lo:hi],
            day_of_year=self.day_of_year[lo:hi],
            month=self.month[lo:hi],
        )

    def month_bounds(self) -> list[tuple[int, int]]:
        """``(lo, hi)`` interval bounds of each market month in the grid."""
        edges = np.flatnonzero(np.diff(self.month)) + 1
        cuts = [0, *edges.tolist(), self.size]
        return list(itertools.pairwise(cuts))


def build_calendar(start: date, days: int, minutes: int, timezone: str) -> Calendar:
    """The interval grid of ``days`` market days from ``start`` at ``minutes`` resolution."""
    first = datetime(start.year, start.month, start.day) - timedelta(hours=MARKET_UTC_OFFSET_H)
    utc = pl.datetime_range(
        first,
        first + timedelta(days=days),
        interval=f"{minutes}m",
        time_zone="UTC",
        closed="left",
        eager=True,
    )
    local = utc.dt.convert_time_zone(timezone)
    market = utc.dt.convert_time_zone("Etc/GMT-10")
    per_day = 1440 // minutes
    idx = np.arange(utc.len())
    mdate = market.dt.date()
    month_no = (mdate.dt.year() * 12 + mdate.dt.month()).to_numpy()
    return Calendar(
        start=start,
        minutes=minutes,
        market_hour=(idx % per_day) * (minutes / 60.0),
        local_hour=(local.dt.hour() + local.dt.minute() / 60.0).to_numpy().astype(np.float64),
        local_weekend=(local.dt.weekday() >= 6).to_numpy(),
        day=idx // per_day,
        day_of_year=mdate.dt.ordinal_day().to_numpy().astype(np.int64),
        month=(month_no - month_no[0]).astype(np.int64),
    )


def _days(start: date, days: int) -> pl.Series:
    """The market days ``start`` .. ``start + days - 1`` as a Date series."""
    return pl.date_range(start, start + timedelta(days=days - 1), eager=True)


@dataclass(frozen=True)
class Weather:
    """Daily weather of the demo year (one value per market day).

    Attributes
    ----------
    tmax_c, tmin_c : daily maximum and minimum temperature [degC].
    clear_fraction : share of clear-sky irradiance that reaches the panels that day [0-1].
    """

    tmax_c: np.ndarray
    tmin_c: np.ndarray
    clear_fraction: np.ndarray


def simulate_weather(rng: np.random.Generator, start: date, days: int) -> Weather:
    """Sydney-like daily temperatures (AR(1) anomaly plus summer heatwaves) and cloudiness.

    Seasonal mean maximum ~26 degC in late January and ~17 degC in July (BoM Sydney climate
    averages); summer heatwaves of 2-4 days add 6-14 degC; hot days are sunnier.
    """
    doy = _days(start, days).dt.ordinal_day().to_numpy().astype(np.int64)
    seasonal = 21.5 + 4.5 * np.cos(2 * np.pi * (doy - 25) / 365.25)
    anomaly = ar1(rng.normal(0.0, 2.2, days), 0.7)
    summer = np.cos(2 * np.pi * (doy - 25) / 365.25).clip(0, None)
    starts = rng.random(days) < 0.045 * summer
    length = rng.integers(2, 5, days)
    boost = rng.uniform(6.0, 14.0, days)
    heat = np.zeros(days)
    for k in range(4):  # a heatwave lasts up to 4 days: paint each start's next k days
        on = starts & (length > k)
        tgt = np.nonzero(on)[0] + k
        keep = tgt < days
        heat[tgt[keep]] = np.maximum(heat[tgt[keep]], boost[on][keep] * (1 - 0.15 * k))
    tmax = seasonal + anomaly + heat
    tmin = tmax - rng.uniform(6.0, 10.0, days) - 0.3 * heat
    cloud = rng.beta(0.9, 2.2, days) * np.where(heat > 0, 0.4, 1.0)
    return Weather(tmax_c=tmax, tmin_c=tmin, clear_fraction=np.clip(1.0 - cloud, 0.05, 1.0))


def temperature_c(weather: Weather, cal: Calendar) -> np.ndarray:
    """Temperature per interval [degC]: minimum near 04:00, maximum near 15:00 local time."""
    phase = 0.5 - 0.5 * np.cos(2 * np.pi * (cal.local_hour - 4.0) / 22.0)
    phase = np.where(cal.local_hour < 4.0, 0.3 * (4.0 - cal.local_hour) / 4.0, phase)
    lo, hi = weather.tmin_c[cal.day], weather.tmax_c[cal.day]
    return lo + (hi - lo) * np.clip(phase, 0.0, 1.0)


def clear_sky_shape(cal: Calendar, latitude_deg: float, longitude_deg: float) -> np.ndarray:
    """Clear-sky PV output shape per interval, ``max(sin(elevation), 0) ** 1.2`` [0-1].

    Solar elevation from declination (Cooper 1969) and the equation of time (Spencer-style
    approximation), evaluated at each interval's midpoint in solar time.

    References
    ----------
    Duffie and Beckman, Solar Engineering of Thermal Processes, 4th ed., sections 1.5-1.6.
    """
    doy = cal.day_of_year.astype(np.float64)
    decl = np.radians(23.45) * np.sin(2 * np.pi * (284 + doy) / 365)
    b = 2 * np.pi * (doy - 81) / 364
    eot_min = 9.87 * np.sin(2 * b) - 7.53 * np.cos(b) - 1.5 * np.sin(b)
    mid = cal.market_hour + cal.hours / 2
    solar_time = mid + (longitude_deg - 15.0 * MARKET_UTC_OFFSET_H) / 15.0 + eot_min / 60.0
    hour_angle = np.radians(15.0 * (solar_time - 12.0))
    lat = np.radians(latitude_deg)
    sin_el = np.sin(lat) * np.sin(decl) + np.cos(lat) * np.cos(decl) * np.cos(hour_angle)
    return np.power(np.clip(sin_el, 0.0, None), 1.2)


def _season_factor(cal: Calendar, pc: PriceConfig) -> np.ndarray:
    """Multiplier of the price level by month of the market day (southern seasons)."""
    month_of_year = _days(cal.start, int(cal.day[-1]) + 1).dt.month().to_numpy()[cal.day]
    table = np.ones(13)
    table[[6, 7, 8]] = pc.seasonal_winter
    table[[9, 10, 11]] = pc.seasonal_spring
    table[[12, 1, 2]] = 1.05
    return table[month_of_year]


def _intraday_shape(local_hour: np.ndarray, peak: float) -> np.ndarray:
    """Price shape by local hour: overnight 0.8, morning bump, evening peak ``peak`` at ~18:45."""
    morning = 0.35 * np.exp(-0.5 * ((local_hour - 7.5) / 1.2) ** 2)
    evening = (peak - 0.8) * np.exp(-0.5 * ((local_hour - 18.75) / 1.6) ** 2)
    return 0.8 + morning + evening


@dataclass(frozen=True)
class PricePath:
    """One region's 5-minute prices and demand for the demo year.

    Attributes
    ----------
    price_per_mwh : regional reference price per interval [$/MWh], within [floor, cap].
    demand_mw : operational demand per interval [MW].
    spike : True where a spike event (or the cap) set the price.
    """

    price_per_mwh: np.ndarray
    demand_mw: np.ndarray
    spike: np.ndarray


def simulate_prices(
    rng: np.random.Generator,
    cal: Calendar,
    weather: Weather,
    pc: PriceConfig,
    sun: np.ndarray,
    cap_per_mwh: np.ndarray,
    floor_per_mwh: np.ndarray,
) -> PricePath:
    """A 5-minute price path: seasonal level x daily factor x intraday shape, minus a solar
    trough, plus AR(1) noise, a temperature-driven spike layer and rare floor dips, clipped to
    the market floor and the financial year's cap.

    Parameters
    ----------
    cal : the price grid (5-minute intervals).
    sun : clear-sky shape on ``cal`` [0-1] (:func:`clear_sky_shape`).
    cap_per_mwh, floor_per_mwh : market price cap and floor per interval [$/MWh].
    """
    n_days = int(cal.day[-1]) + 1
    temp = temperature_c(weather, cal)
    daily = np.exp(ar1(rng.normal(0, 1, n_days), pc.daily_ar) * pc.daily_sigma
                   * np.sqrt(1 - pc.daily_ar**2))  # fmt: skip
    level = pc.mean_level_per_mwh * _season_factor(cal, pc) * daily[cal.day]
    hot = np.clip(temp - 28.0, 0.0, None)
    base = level * _intraday_shape(cal.local_hour, pc.evening_peak_factor) + 1.5 * hot**2
    trough = pc.solar_trough_per_mwh * sun * weather.clear_fraction[cal.day]
    trough *= np.where(_season_factor(cal, pc) < 1.0, 1.2, 1.0)
    noise_sd = pc.interval_noise_per_mwh * np.sqrt(1 - pc.interval_ar**2)
    noise = ar1(rng.normal(0.0, noise_sd, cal.size), pc.interval_ar)
    price = base - trough + noise
    spike_price = _spikes(rng, cal, temp, pc, cap_per_mwh)
    spike = spike_price > price
    price = np.where(spike, spike_price, price)
    price = _floor_dips(rng, cal, pc, sun, price, floor_per_mwh)
    price = np.clip(np.round(price, 2), floor_per_mwh, cap_per_mwh)
    demand = _demand(rng, cal, pc, temp, sun * weather.clear_fraction[cal.day])
    return PricePath(price_per_mwh=price, demand_mw=demand, spike=spike)


def _spikes(
    rng: np.random.Generator,
    cal: Calendar,
    temp: np.ndarray,
    pc: PriceConfig,
    cap_per_mwh: np.ndarray,
) -> np.ndarray:
    """Spike price per interval (``-inf`` where no spike): events start with a hazard that grows
    with heat above 30 degC (afternoon/evening) and cold winter evenings, last 1-12 intervals
    (geometric) and take a lognormal magnitude, or the cap with ``cap_probability``."""
    h = cal.local_hour
    window = np.where((h >= 14) & (h < 21), 3.0, 0.35)
    cold_evening = np.clip(12.0 - temp, 0.0, None) * ((h >= 17) & (h < 21))
    hazard = (
        (pc.spike_base_per_day / cal.per_day)
        * window
        * np.exp(
            pc.spike_heat_gain_per_degc * np.clip(temp - 30.0, 0.0, None)
            + pc.spike_cold_gain_per_degc * cold_evening
        )
    )
    starts = np.nonzero(rng.random(cal.size) < np.clip(hazard, 0.0, 1.0))[0]
    length = np.minimum(rng.geometric(0.3, starts.size), 12)
    size = pc.spike_median_per_mwh * np.exp(pc.spike_sigma * rng.standard_normal(starts.size))
    size = np.maximum(size, 300.0)
    at_cap = rng.random(starts.size) < pc.cap_probability
    out = np.full(cal.size, -np.inf)
    for k in range(12):  # paint each event's k-th interval (vector over events)
        on = (length > k) & (starts + k < cal.size)
        idx = starts[on] + k
        val = np.where(at_cap[on], cap_per_mwh[idx], np.minimum(size[on], cap_per_mwh[idx]))
        out[idx] = np.maximum(out[idx], val * (1.0 if k == 0 else 0.97**k))
    return out


def _floor_dips(
    rng: np.random.Generator,
    cal: Calendar,
    pc: PriceConfig,
    sun: np.ndarray,
    price: np.ndarray,
    floor_per_mwh: np.ndarray,
) -> np.ndarray:
    """Rare midday dips to the floor (low demand, high wind and solar): 1-6 intervals each."""
    n_events = int(rng.poisson(pc.floor_event_per_year * (cal.day[-1] + 1) / 365.0))
    weights = sun**4
    starts = rng.choice(cal.size, size=n_events, replace=False, p=weights / weights.sum())
    length = rng.integers(1, 7, n_events)
    out = price.copy()
    for k in range(6):
        idx = starts[(length > k) & (starts + k < cal.size)] + k
        out[idx] = floor_per_mwh[idx]
    return out


def _demand(
    rng: np.random.Generator,
    cal: Calendar,
    pc: PriceConfig,
    temp: np.ndarray,
    solar: np.ndarray,
) -> np.ndarray:
    """Operational demand [MW]: intraday shape, heating and cooling, minus rooftop solar."""
    shape = _intraday_shape(cal.local_hour, 1.3)
    weather = 180.0 * np.clip(temp - 24.0, 0, None) + 120.0 * np.clip(16.0 - temp, 0, None)
    noise = ar1(rng.normal(0.0, 25.0, cal.size), 0.98)
    demand = pc.demand_mean_mw * (0.75 + 0.25 * shape) + weather - 2500.0 * solar + noise
    return np.round(np.clip(demand, 3000.0, None), 2)
