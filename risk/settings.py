"""Validated risk settings (read from TOML by the caller; validated here, once)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SpikeModelName = Literal["regime_switching", "jump_ou"]
PriceSource = Literal["parametric", "bootstrap"]
SamplerName = Literal["pseudo", "sobol"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSettings(_Strict):
    """Model choice and calibration options."""

    source: PriceSource = "parametric"
    spike_model: SpikeModelName = "regime_switching"
    spike_threshold_per_mwh: float = 300.0
    spike_sigmas: float = Field(default=3.0, gt=0)
    bootstrap_block_days: int = Field(default=7, ge=1)


class SimulationSettings(_Strict):
    """Monte Carlo options; results do not depend on ``paths_per_chunk``."""

    n_paths: int = Field(default=2048, ge=2)
    seed: int = 20240701
    antithetic: bool = False
    sampler: SamplerName = "pseudo"
    paths_per_chunk: int = Field(default=16384, ge=1)
    keep_paths: int = Field(default=16, ge=0)
    horizon_start: dt.date = dt.date(2024, 7, 1)
    horizon_days: int = Field(default=365, ge=1)


class HedgeSettings(_Strict):
    """Hedging and risk premium."""

    risk_aversion_k: float = Field(default=0.3, ge=0)
    cvar_alpha: float = Field(default=0.95, gt=0.5, lt=1)
    customers: int = Field(default=10_000, ge=1, description="customers in the hedged book")
    max_hedge_multiple: float = Field(default=3.0, gt=0)
    lp_max_paths: int = Field(default=4000, ge=100)


class ReentrySettings(_Strict):
    """Re-entry option: policy levers and behavioural rules."""

    notice_lag_months: int = Field(default=1, ge=0)
    lockout_months: int = Field(default=0, ge=0)
    switch_fee_aud: float = Field(default=0.0, ge=0)
    reprice_at_forwards: bool = False
    forward_markup_per_kwh: float = 0.0
    upfront_charge_aud: float = Field(default=0.0, ge=0)
    dynamic_adders_per_kwh: float = Field(default=0.12, description="network, fees, margin")
    threshold_ratio: float = Field(default=1.3, gt=0)
    hazard_intercept: float = -4.0
    hazard_slope: float = 4.0
    discount_rate_annual: float = 0.05
    dynamic_customers_per_safe_harbour: float = Field(default=0.25, ge=0)


class SafeHarbourSettings(_Strict):
    """Safe-harbour price solve."""

    structure: Literal["flat", "tou"] = "flat"
    peak_to_offpeak_ratio: float = Field(default=1.6, gt=0)
    target_margin: float = Field(default=0.05, ge=0, lt=1, description="share of revenue")
    other_costs_per_kwh: dict[str, float] = Field(
        default_factory=lambda: {
            "network": 0.10,
            "environmental": 0.015,
            "market_fees": 0.002,
            "retail_operating": 0.02,
        }
    )


class RiskSettings(_Strict):
    """Everything a risk run needs besides data."""

    region: str = "NSW1"
    cohort: str = "all"
    floor_per_mwh: float = -1000.0
    caps_by_fy: dict[int, float] = Field(
        default_factory=lambda: {
            2020: 14700.0,
            2021: 15000.0,
            2022: 15100.0,
            2023: 15500.0,
            2024: 16600.0,
            2025: 17500.0,
            2026: 20300.0,
        }
    )
    model: ModelSettings = Field(default_factory=ModelSettings)
    simulation: SimulationSettings = Field(default_factory=SimulationSettings)
    hedging: HedgeSettings = Field(default_factory=HedgeSettings)
    reentry: ReentrySettings = Field(default_factory=ReentrySettings)
    safe_harbour: SafeHarbourSettings = Field(default_factory=SafeHarbourSettings)
