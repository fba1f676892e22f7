"""The demo generator's inputs, read once from ``data/demo.toml`` and validated by pydantic.

Each value in the TOML carries its rationale or source as a comment; this module only states the
types and bounds. Validation happens here, at the edge; the generator trusts the model.
"""

from __future__ import annotations

import tomllib
from datetime import date, timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tariffs.errors import ConfigError

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "data" / "demo.toml"
"""``data/demo.toml`` in the source tree."""

Share = Field(ge=0.0, le=1.0)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoadConfig(_Section):
    """Base household load and its weather sensitivity."""

    annual_kwh_median: float = Field(gt=0)
    annual_kwh_sigma: float = Field(ge=0)
    interval_noise_sigma: float = Field(ge=0)
    day_noise_sigma: float = Field(ge=0)
    home_day_share: float = Share
    cooling_kw_per_degc: float = Field(ge=0)
    cooling_threshold_c: float
    heating_kw_per_degc: float = Field(ge=0)
    heating_threshold_c: float
    ac_share: float = Share


class SolarConfig(_Section):
    """Rooftop PV uptake, sizes and yield."""

    share: float = Share
    sizes_kw: list[float]
    size_weights: list[float]
    yield_kwh_per_kw: float = Field(gt=0)
    cloud_day_sigma: float = Field(ge=0)
    cloud_interval_sigma: float = Field(ge=0)


class BatteryConfig(_Section):
    """Home batteries (a subset of solar homes) and VPP enrolment."""

    share: float = Share
    sizes_kwh: list[float]
    size_weights: list[float]
    power_kw: float = Field(gt=0)
    backup_reserve_pct: float = Field(ge=0, lt=100)
    efficiency_one_way: float = Field(gt=0, le=1)
    vpp_share_of_batteries: float = Share
    vpp_contracts: list[str]
    vpp_weights: list[float]


class EvConfig(_Section):
    """Electric-vehicle home charging."""

    share: float = Share
    charger_kw: float = Field(gt=0)
    plug_in_earliest_h: float = Field(ge=12, lt=24)
    plug_in_latest_h: float = Field(ge=12, lt=24)
    session_kwh_mean: float = Field(gt=0)
    session_probability: float = Share


class CustomerConfig(_Section):
    """Account attributes, product mix and churn."""

    concession_share: float = Share
    monthly_billing_share: float = Share
    dynamic_share_base: float = Share
    dynamic_share_der: float = Share
    tou_share: float = Share
    switch_share: float = Share
    churn_in_share: float = Share
    churn_out_share: float = Share
    tenant_change_share: float = Share
    dlf_range: tuple[float, float]
    mlf_range: tuple[float, float]


class PriceConfig(_Section):
    """The 5-minute regional price model."""

    mean_level_per_mwh: float
    seasonal_winter: float = Field(gt=0)
    seasonal_spring: float = Field(gt=0)
    daily_sigma: float = Field(ge=0)
    daily_ar: float = Field(ge=0, lt=1)
    interval_noise_per_mwh: float = Field(ge=0)
    interval_ar: float = Field(ge=0, lt=1)
    solar_trough_per_mwh: float = Field(ge=0)
    evening_peak_factor: float = Field(gt=0)
    spike_base_per_day: float = Field(ge=0)
    spike_heat_gain_per_degc: float = Field(ge=0)
    spike_cold_gain_per_degc: float = Field(ge=0)
    spike_median_per_mwh: float = Field(gt=0)
    spike_sigma: float = Field(ge=0)
    cap_probability: float = Share
    floor_event_per_year: float = Field(ge=0)
    demand_mean_mw: float = Field(gt=0)


class DemoConfig(_Section):
    """All inputs of the synthetic demo retailer (see ``data/demo.toml``)."""

    seed: int = Field(ge=0)
    households: int = Field(ge=1)
    region: str
    timezone: str
    start: date
    days: int = Field(ge=1, le=366)
    meter_interval_minutes: int
    price_interval_minutes: int
    latitude_deg: float = Field(ge=-90, le=90)
    longitude_deg: float = Field(ge=-180, le=180)
    nmi_prefix: str
    participant: str
    retailer: str
    load: LoadConfig
    solar: SolarConfig
    battery: BatteryConfig
    ev: EvConfig
    customers: CustomerConfig
    prices: PriceConfig

    @model_validator(mode="after")
    def _check(self) -> DemoConfig:
        for name in ("meter_interval_minutes", "price_interval_minutes"):
            minutes = getattr(self, name)
            if minutes not in (5, 15, 30):
                raise ValueError(f"{name} = {minutes} is not 5, 15 or 30")
        if self.battery.share > self.solar.share:
            raise ValueError(
                f"battery.share {self.battery.share} exceeds solar.share {self.solar.share}: "
                "demo batteries are only installed with solar"
            )
        for sec, a, b in (
            ("solar", self.solar.sizes_kw, self.solar.size_weights),
            ("battery", self.battery.sizes_kwh, self.battery.size_weights),
            ("battery vpp", self.battery.vpp_contracts, self.battery.vpp_weights),
        ):
            if len(a) != len(b) or not a or abs(sum(b) - 1.0) > 1e-9:
                raise ValueError(f"{sec}: options and weights must have equal length, sum 1")
        return self

    @property
    def end(self) -> date:
        """First day after the demo period (exclusive)."""
        return self.start + timedelta(days=self.days)


def load_demo_config(path: Path | None = None, /, **overrides: object) -> DemoConfig:
    """Read and validate the demo TOML (default ``data/demo.toml``); apply top-level overrides.

    Raises :class:`ConfigError` naming the file and the broken rule.
    """
    target = DEFAULT_CONFIG if path is None else Path(path)
    try:
        raw = tomllib.loads(target.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"demo config {target}: {exc}") from exc
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return DemoConfig.model_validate(raw)
    except ValueError as exc:
        raise ConfigError(f"demo config {target}: {exc}") from exc
