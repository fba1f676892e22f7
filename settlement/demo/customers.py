"""Synthetic accounts and product enrolments for the demo households (the customer file rows).

One account per household at the start of the year, plus a new account for each tenant change.
Quirks that exercise the billing and settlement rules: mid-year product switches (both
directions between dynamic and safe harbour), churn-in (supply and meter data start mid-year),
churn-out (supply and meter data stop) and tenant changes (same NMI, continuous meter data, two
accounts). Output columns follow the customer file contract (docs/CONTRACTS.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from settlement.demo.config import DemoConfig
from settlement.demo.households import Households

PRODUCTS = ("dyn-passthrough", "sh-flat", "sh-tou")
CUSTOMER_COLUMNS = (
    "account", "nmi", "region", "timezone", "dlf", "mlf", "billing_cycle", "cycle_day",
    "move_in", "move_out", "solar_kw", "battery_kwh", "battery_kw", "backup_reserve_pct", "ev",
    "concession", "vpp_contract", "product", "product_from", "product_to",
)  # fmt: skip


@dataclass(frozen=True)
class CustomerBook:
    """The demo customer file and the supply window of every NMI.

    Attributes
    ----------
    rows : one row per account x enrolment, the columns of :data:`CUSTOMER_COLUMNS` (dates as
        ``Date``, booleans as ``Boolean``).
    supply_from, supply_to : per household, first supplied market day (inclusive) and the first
        day no longer supplied (exclusive), as day offsets from the demo start; meter data is
        delivered only inside this window.
    """

    rows: pl.DataFrame
    supply_from: np.ndarray
    supply_to: np.ndarray


def _pick_product(rng: np.random.Generator, der: np.ndarray, cfg: DemoConfig) -> np.ndarray:
    """Dynamic with a DER-dependent probability, else safe-harbour TOU or flat."""
    cc = cfg.customers
    dynamic = rng.random(der.size) < np.where(der, cc.dynamic_share_der, cc.dynamic_share_base)
    tou = rng.random(der.size) < cc.tou_share
    return np.where(dynamic, PRODUCTS[0], np.where(tou, PRODUCTS[2], PRODUCTS[1]))


def _events(rng: np.random.Generator, n: int, cfg: DemoConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per household one of: 0 none, 1 switch, 2 churn-in, 3 churn-out, 4 tenant change; and the
    event's day offset (between day 30 and 30 days before the end)."""
    cc = cfg.customers
    shares = [cc.switch_share, cc.churn_in_share, cc.churn_out_share, cc.tenant_change_share]
    p = np.array([1.0 - sum(shares), *shares])
    kind = rng.choice(5, size=n, p=p)
    lo, hi = min(30, cfg.days // 3), max(cfg.days - 30, cfg.days // 3 + 1)
    return kind, rng.integers(lo, hi, n)


def draw_customers(rng: np.random.Generator, hh: Households, cfg: DemoConfig) -> CustomerBook:
    """Draw the accounts, enrolments and supply windows of the demo households."""
    n, cc = hh.count, cfg.customers
    der = (hh.solar_kw > 0) | (hh.battery_kwh > 0) | hh.ev
    product = _pick_product(rng, der, cfg)
    second = _pick_product(rng, der, cfg)
    switched_to = np.where(
        product == PRODUCTS[0],
        np.where(second == PRODUCTS[0], PRODUCTS[1], second),
        PRODUCTS[0],
    )
    kind, day = _events(rng, n, cfg)
    tenure_days = rng.integers(30, 3650, n)
    attrs = {
        "dlf": np.round(rng.uniform(*cc.dlf_range, n), 4),
        "mlf": np.round(rng.uniform(*cc.mlf_range, n), 4),
        "monthly": rng.random(n) < cc.monthly_billing_share,
        "cycle_day": rng.integers(1, 29, n),
        "concession": rng.random(n) < cc.concession_share,
    }
    newcomer = {  # a new tenant keeps the site's loss factors
        "dlf": attrs["dlf"],
        "mlf": attrs["mlf"],
        "product": _pick_product(rng, der, cfg),
        "monthly": rng.random(n) < cc.monthly_billing_share,
        "cycle_day": rng.integers(1, 29, n),
        "concession": rng.random(n) < cc.concession_share,
    }
    start = np.datetime64(cfg.start, "D")
    event_date = start + day
    move_in = np.where(kind == 2, event_date, start - tenure_days)
    move_out = np.where((kind == 3) | (kind == 4), event_date, np.datetime64("NaT", "D"))
    base = _frame(hh, cfg, np.arange(n), attrs, move_in, move_out)
    first = base.with_columns(
        pl.Series("product", product),
        pl.col("move_in").alias("product_from"),
        pl.Series("product_to", np.where(kind == 1, event_date, move_out)),
    )
    after = base.filter(pl.Series(kind == 1)).with_columns(
        pl.Series("product", switched_to[kind == 1]),
        pl.Series("product_from", event_date[kind == 1]),
        pl.lit(None, pl.Date).alias("product_to"),
    )
    tenant = _tenants(hh, cfg, kind == 4, event_date, newcomer)
    rows = pl.concat([first, after, tenant]).sort("account", "product_from")
    supply_from = np.where(kind == 2, day, 0)
    supply_to = np.where(kind == 3, day, cfg.days)
    return CustomerBook(rows=rows.select(CUSTOMER_COLUMNS), supply_from=supply_from,
                        supply_to=supply_to)  # fmt: skip


def _account_ids(numbers: np.ndarray) -> np.ndarray:
    """``A`` + the number zero-padded to 7 digits (vectorised; empty in, empty out)."""
    if numbers.size == 0:
        return np.array([], dtype=str)
    return np.char.add("A", np.char.zfill(numbers.astype(str), 7))


def _frame(
    hh: Households,
    cfg: DemoConfig,
    idx: np.ndarray,
    attrs: dict[str, np.ndarray],
    move_in: np.ndarray,
    move_out: np.ndarray,
    account_no: np.ndarray | None = None,
) -> pl.DataFrame:
    """Account attribute columns for households ``idx`` (attrs already indexed like ``idx``)."""
    numbers = idx + 1 if account_no is None else account_no
    return pl.DataFrame(
        {
            "account": _account_ids(numbers),
            "nmi": hh.nmi[idx],
            "region": cfg.region,
            "timezone": cfg.timezone,
            "dlf": attrs["dlf"],
            "mlf": attrs["mlf"],
            "billing_cycle": np.where(attrs["monthly"], "monthly", "quarterly"),
            "cycle_day": attrs["cycle_day"].astype(np.int64),
            "move_in": move_in,
            "move_out": move_out,
            "solar_kw": hh.solar_kw[idx],
            "battery_kwh": hh.battery_kwh[idx],
            "battery_kw": hh.battery_kw[idx],
            "backup_reserve_pct": np.where(
                hh.battery_kwh[idx] > 0, cfg.battery.backup_reserve_pct, 0.0
            ),
            "ev": hh.ev[idx],
            "concession": attrs["concession"],
            "vpp_contract": hh.vpp_contract[idx],
        }
    ).with_columns(
        pl.col("move_in").cast(pl.Date),
        pl.col("move_out").cast(pl.Date),
        pl.when(pl.col("vpp_contract") != "").then(pl.col("vpp_contract")).alias("vpp_contract"),
    )


def _tenants(
    hh: Households,
    cfg: DemoConfig,
    changed: np.ndarray,
    event_date: np.ndarray,
    newcomer: dict[str, np.ndarray],
) -> pl.DataFrame:
    """New accounts moving into NMIs vacated by a tenant change (same day, same house and DER;
    the new tenant does not inherit the VPP contract)."""
    idx = np.nonzero(changed)[0]
    numbers = hh.count + 1 + np.arange(idx.size)
    attrs = {k: v[idx] for k, v in newcomer.items() if k != "product"}
    frame = _frame(hh, cfg, idx, attrs, event_date[idx],
                   np.full(idx.size, np.datetime64("NaT", "D")), numbers)  # fmt: skip
    return frame.with_columns(
        pl.lit(None, pl.Utf8).alias("vpp_contract"),
        pl.Series("product", newcomer["product"][idx]),
        pl.col("move_in").alias("product_from"),
        pl.lit(None, pl.Date).alias("product_to"),
    )
