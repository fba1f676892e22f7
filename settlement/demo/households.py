"""Synthetic households: attributes (solar, battery, EV, VPP) and half-hourly energy flows.

Vectorised over households (numpy arrays of shape ``(households, intervals)``); the only loop over
time is the battery state of charge, one vector step per interval over the battery homes. A
month is simulated at a time (:func:`simulate_period`), carrying the battery state of charge and
any EV charging that runs past midnight at a month end, so memory stays ~tens of MB.

Meter convention (DOMAIN.md section 2): E1 = energy imported from the grid, B1 = energy exported
to it, per interval:

    net = load - solar + battery_charge - battery_discharge
    import = max(net, 0)      export = max(-net, 0)

which conserves energy: ``load = import - export + solar + discharge - charge``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from settlement.demo.config import DemoConfig
from settlement.demo.synth import Calendar

EV_MAX_SLOTS = 24
"""Longest EV session painted, in intervals (12 h at 30 minutes)."""


@dataclass(frozen=True)
class Households:
    """Static household attributes, one entry per household (index = household number).

    Attributes
    ----------
    nmi : 10-character NMIs.
    annual_kwh : base consumption before weather and EV [kWh/yr].
    home_day : occupied during the working day.
    has_ac : has air-conditioning.
    solar_kw : PV array size [kW] (0 = none).
    battery_kwh, battery_kw : usable capacity [kWh] and inverter power [kW] (0 = none).
    reserve_kwh : backup reserve the battery never goes below [kWh].
    ev : charges an electric vehicle at home.
    vpp_contract : VPP programme id ('' = none; only battery homes).
    """

    nmi: np.ndarray
    annual_kwh: np.ndarray
    home_day: np.ndarray
    has_ac: np.ndarray
    solar_kw: np.ndarray
    battery_kwh: np.ndarray
    battery_kw: np.ndarray
    reserve_kwh: np.ndarray
    ev: np.ndarray
    vpp_contract: np.ndarray

    @property
    def count(self) -> int:
        """Number of households."""
        return int(self.nmi.size)


def draw_households(rng: np.random.Generator, cfg: DemoConfig) -> Households:
    """Draw ``cfg.households`` households: loads, solar (~35%), batteries among solar homes,
    EVs (twice as likely in solar homes), VPP contracts among battery owners."""
    n, lc, sc, bc, ec = cfg.households, cfg.load, cfg.solar, cfg.battery, cfg.ev
    digits = np.char.zfill(np.arange(1, n + 1).astype(str), 10 - len(cfg.nmi_prefix))
    nmi = np.char.add(cfg.nmi_prefix, digits)
    annual = lc.annual_kwh_median * np.exp(lc.annual_kwh_sigma * rng.standard_normal(n))
    home_day = rng.random(n) < lc.home_day_share
    has_ac = rng.random(n) < lc.ac_share
    solar = rng.random(n) < sc.share
    solar_kw = np.where(solar, rng.choice(sc.sizes_kw, size=n, p=sc.size_weights), 0.0)
    p_batt = bc.share / sc.share if sc.share > 0 else 0.0
    battery = solar & (rng.random(n) < p_batt)
    battery_kwh = np.where(battery, rng.choice(bc.sizes_kwh, size=n, p=bc.size_weights), 0.0)
    p_ev = ec.share / (1.0 + sc.share)  # P(ev | no solar); P(ev | solar) = 2 x that
    ev = rng.random(n) < np.where(solar, 2 * p_ev, p_ev)
    vpp = battery & (rng.random(n) < bc.vpp_share_of_batteries)
    contract = rng.choice(np.array(bc.vpp_contracts), size=n, p=bc.vpp_weights)
    return Households(
        nmi=nmi,
        annual_kwh=annual,
        home_day=home_day,
        has_ac=has_ac,
        solar_kw=solar_kw,
        battery_kwh=battery_kwh,
        battery_kw=np.where(battery, bc.power_kw, 0.0),
        reserve_kwh=battery_kwh * bc.backup_reserve_pct / 100.0,
        ev=ev,
        vpp_contract=np.where(vpp, contract, ""),
    )


@dataclass
class CarryState:
    """What one period hands to the next: battery state of charge and EV charging in flight.

    Attributes
    ----------
    soc_kwh : state of charge per household [kWh] (0 without a battery).
    ev_kwh : EV energy still to be drawn in the first intervals of the next period,
        shape ``(households, EV_MAX_SLOTS)`` [kWh].
    """

    soc_kwh: np.ndarray
    ev_kwh: np.ndarray

    @classmethod
    def initial(cls, hh: Households) -> CarryState:
        """Batteries half full, no EV charging in flight."""
        soc = hh.reserve_kwh + 0.5 * (hh.battery_kwh - hh.reserve_kwh)
        return cls(soc_kwh=soc, ev_kwh=np.zeros((hh.count, EV_MAX_SLOTS)))


@dataclass(frozen=True)
class EnergyFlows:
    """Energy per household and interval over a period, all ``(households, intervals)`` [kWh].

    ``soc_kwh`` is the state of charge at the END of each interval.
    """

    load_kwh: np.ndarray
    solar_kwh: np.ndarray
    charge_kwh: np.ndarray
    discharge_kwh: np.ndarray
    soc_kwh: np.ndarray
    import_kwh: np.ndarray
    export_kwh: np.ndarray


def _profile(local_hour: np.ndarray, weekend: np.ndarray, home_day: bool) -> np.ndarray:
    """Normalised (mean ~1) base-load shape by local hour: night base, morning and evening peaks."""
    h = local_hour + np.where(weekend, -1.0, 0.0)  # weekends start an hour later
    morning = 0.9 * np.exp(-0.5 * ((h - 7.25) / 1.0) ** 2)
    evening = 1.6 * np.exp(-0.5 * ((local_hour - 19.0) / 1.8) ** 2)
    day = (0.45 if home_day else 0.15) + np.where(weekend, 0.25, 0.0)
    daytime = day * ((local_hour >= 9) & (local_hour < 16.5))
    shape = 0.45 + morning + evening + daytime
    return shape / shape.mean()


def _base_load(
    rng: np.random.Generator, hh: Households, cal: Calendar, temp: np.ndarray, cfg: DemoConfig
) -> np.ndarray:
    """Base load plus weather-driven cooling and heating [kWh per interval]."""
    lc = cfg.load
    profiles = np.stack([_profile(cal.local_hour, cal.local_weekend, b) for b in (False, True)])
    shape = profiles[hh.home_day.astype(np.intp)]
    days = int(cal.day.max() - cal.day.min()) + 1
    day_factor = np.exp(lc.day_noise_sigma * rng.standard_normal((hh.count, days)))
    noise = rng.lognormal(-0.5 * lc.interval_noise_sigma**2, lc.interval_noise_sigma, shape.shape)
    per_interval = hh.annual_kwh[:, None] / (365.0 * cal.per_day)
    base = per_interval * shape * day_factor[:, cal.day - cal.day.min()] * noise
    h = cal.local_hour
    awake = np.where((h >= 6.5) & (h < 23.0), 1.0, 0.35)
    occupied = np.where(hh.home_day[:, None], 1.0, np.where((h >= 8.5) & (h < 16.5), 0.25, 1.0))
    cooling = lc.cooling_kw_per_degc * np.clip(temp - lc.cooling_threshold_c, 0.0, None)
    heating = lc.heating_kw_per_degc * np.clip(lc.heating_threshold_c - temp, 0.0, None)
    weather_kw = cooling * hh.has_ac[:, None] + heating
    return base + weather_kw * awake * occupied * cal.hours


def _solar(
    rng: np.random.Generator,
    hh: Households,
    sun: np.ndarray,
    clear: np.ndarray,
    scale: float,
    cfg: DemoConfig,
    hours: float,
) -> np.ndarray:
    """PV generation [kWh per interval]: kW x calibrated clear-sky shape x daily clearness x
    per-home passing-cloud noise, never above 90% of the array rating."""
    sigma = cfg.solar.cloud_interval_sigma
    noise = rng.lognormal(-0.5 * sigma**2, sigma, (hh.count, sun.size))
    per_kw = np.minimum(scale * sun * clear * noise, 0.9)
    return hh.solar_kw[:, None] * per_kw * hours


def _ev(
    rng: np.random.Generator, hh: Households, cal: Calendar, carry: np.ndarray, cfg: DemoConfig
) -> tuple[np.ndarray, np.ndarray]:
    """EV charging [kWh per interval] and the part that runs past the period end.

    One possible session per EV home per day: plug-in uniformly between the earliest and latest
    local hour, energy gamma(2) distributed around the mean, drawn at the charger rating.
    """
    ec, n, size, per_day = cfg.ev, hh.count, cal.size, cal.per_day
    days = size // per_day
    out = np.zeros((n, size + EV_MAX_SLOTS))
    out[:, :EV_MAX_SLOTS] += carry
    on = hh.ev[:, None] & (rng.random((n, days)) < ec.session_probability)
    plug_h = rng.uniform(ec.plug_in_earliest_h, ec.plug_in_latest_h, (n, days))
    energy = np.minimum(rng.gamma(2.0, ec.session_kwh_mean / 2.0, (n, days)), 60.0)
    dst = (cal.local_hour - cal.market_hour)[::per_day] % 24  # local minus market, per day
    start = np.arange(days) * per_day + np.floor((plug_h - dst) / cal.hours).astype(np.int64)
    step = ec.charger_kw * cal.hours
    rows = np.broadcast_to(np.arange(n)[:, None], (n, days))
    for k in range(EV_MAX_SLOTS):  # paint the k-th interval of every session at once
        e = np.clip(energy - k * step, 0.0, step) * on
        out[rows, start + k] += e
    return out[:, :size], out[:, size:]


def _battery(
    hh: Households, load: np.ndarray, solar: np.ndarray, soc0: np.ndarray, cfg: DemoConfig,
    hours: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Self-consumption dispatch: charge from excess solar, discharge to cover load, within the
    inverter power, the capacity and the backup reserve. Returns charge, discharge, SoC (end of
    interval), all ``(households, intervals)`` [kWh], and the final SoC."""
    eta = cfg.battery.efficiency_one_way
    idx = np.nonzero(hh.battery_kwh > 0)[0]
    charge, discharge = np.zeros_like(load), np.zeros_like(load)
    soc_path = np.broadcast_to(soc0[:, None], load.shape).copy()
    if idx.size == 0:
        return charge, discharge, soc_path, soc0.copy()
    surplus = np.ascontiguousarray((solar[idx] - load[idx]).T)
    cap, floor = hh.battery_kwh[idx], hh.reserve_kwh[idx]
    limit = hh.battery_kw[idx] * hours
    soc = soc0[idx].copy()
    ch, dis, path = np.empty_like(surplus), np.empty_like(surplus), np.empty_like(surplus)
    for t in range(surplus.shape[0]):  # a vector step over battery homes per interval
        s = surplus[t]
        c = np.minimum(np.minimum(np.maximum(s, 0.0), limit), (cap - soc) / eta)
        d = np.minimum(np.minimum(np.maximum(-s, 0.0), limit), (soc - floor) * eta)
        soc = np.clip(soc + c * eta - d / eta, floor, cap)
        ch[t], dis[t], path[t] = c, d, soc
    charge[idx], discharge[idx], soc_path[idx] = ch.T, dis.T, path.T
    soc_end = soc0.copy()
    soc_end[idx] = soc
    return charge, discharge, soc_path, soc_end


def simulate_period(
    rng: np.random.Generator,
    hh: Households,
    cal: Calendar,
    temp: np.ndarray,
    sun: np.ndarray,
    clear: np.ndarray,
    solar_scale: float,
    state: CarryState,
    cfg: DemoConfig,
) -> tuple[EnergyFlows, CarryState]:
    """Energy flows of every household over the whole days of ``cal`` (e.g. one month).

    Parameters
    ----------
    cal : the period's interval grid (a slice of the year's calendar).
    temp : temperature per interval [degC]; sun : clear-sky shape per interval [0-1];
    clear : daily clear fraction per interval [0-1]; solar_scale : kW per kW at clear-sky
        shape 1 (from :func:`solar_scale`).
    state : what the previous period carried over.
    """
    load = _base_load(rng, hh, cal, temp, cfg)
    ev, ev_tail = _ev(rng, hh, cal, state.ev_kwh, cfg)
    load += ev
    solar = _solar(rng, hh, sun, clear, solar_scale, cfg, cal.hours)
    charge, discharge, soc, soc_end = _battery(hh, load, solar, state.soc_kwh, cfg, cal.hours)
    net = load - solar + charge - discharge
    flows = EnergyFlows(
        load_kwh=load,
        solar_kwh=solar,
        charge_kwh=charge,
        discharge_kwh=discharge,
        soc_kwh=soc,
        import_kwh=np.maximum(net, 0.0),
        export_kwh=np.maximum(-net, 0.0),
    )
    return flows, CarryState(soc_kwh=soc_end, ev_kwh=ev_tail)


def solar_scale(sun: np.ndarray, clear: np.ndarray, hours: float, yield_kwh_per_kw: float,
                days: int) -> float:  # fmt: skip
    """Peak output per kW that makes one year's expected yield ``yield_kwh_per_kw`` [kW/kW]."""
    energy_per_kw = float(np.sum(sun * clear) * hours) * 365.0 / days
    return yield_kwh_per_kw / energy_per_kw if energy_per_kw > 0 else 0.0
