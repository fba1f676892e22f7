"""Fitted model parameters to and from plain dicts (JSON), exactly (no rounding)."""

from __future__ import annotations

from typing import Any

import numpy as np

from risk.load_model import LoadModelParams
from risk.ou import OUParams
from risk.price_model import PriceModelParams
from risk.simulate import MarketModel
from risk.spikes import SpikeParams


def _ou(d: dict[str, Any]) -> OUParams:
    return OUParams(float(d["kappa"]), float(d["theta"]), float(d["sigma"]))


def spikes_from_dict(d: dict[str, Any]) -> SpikeParams:
    """Inverse of :meth:`SpikeParams.to_dict`."""
    return SpikeParams(
        model=d["model"],
        threshold_per_mwh=float(d["threshold_per_mwh"]),
        start_prob=np.asarray(d["start_prob_by_month_hour"], dtype=float),
        p_stay=float(d["p_stay"]),
        decay=float(d["decay"]),
        level_quantiles_per_mwh=np.asarray(d["level_quantiles_per_mwh"], dtype=float),
        mean_duration_intervals=float(d["mean_duration_intervals"]),
        share=float(d["historical_share"]),
    )


def price_from_dict(d: dict[str, Any]) -> PriceModelParams:
    """Inverse of :meth:`PriceModelParams.to_dict`."""
    return PriceModelParams(
        interval_minutes=int(d["interval_minutes"]),
        shape_per_mwh=np.asarray(d["shape_per_mwh"], dtype=float),
        vol_per_mwh=np.asarray(d["vol_per_mwh"], dtype=float),
        fast=_ou(d["fast_ou_per_day"]),
        level=_ou(d["level_ou_per_day"]),
        level_now=float(d["level_now"]),
        spikes=spikes_from_dict(d["spikes"]),
        slow=_ou(d["slow_ou_per_day"]),
        slow_now=float(d["slow_now"]),
        gamma_slow=float(d["gamma_slow"]),
        gamma_level=float(d["gamma_level"]),
        gamma_driver=float(d["gamma_driver"]),
        intensity_log_norm=float(d["intensity_log_norm"]),
        calibrated_from=str(d.get("calibrated_from", "")),
        notes=list(d.get("notes", [])),
    )


def load_from_dict(d: dict[str, Any]) -> LoadModelParams:
    """Inverse of :meth:`LoadModelParams.to_dict`."""
    return LoadModelParams(
        interval_minutes=int(d["interval_minutes"]),
        shape_kwh=np.asarray(d["shape_kwh"], dtype=float),
        driver=_ou(d["driver_ou_per_day"]),
        driver_now=float(d["driver_now"]),
        spike_uplift=float(d["spike_uplift"]),
        annual_kwh=float(d["annual_kwh"]),
        label=str(d.get("label", "")),
    )


def market_model_from_dict(d: dict[str, Any]) -> MarketModel:
    """Inverse of :meth:`MarketModel.to_dict`."""
    return MarketModel(
        price_from_dict(d["price"]), load_from_dict(d["load"]), float(d["rho_level_driver"])
    )
