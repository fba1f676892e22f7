"""Streaming Monte Carlo of joint price and load paths.

Paths are split into canonical blocks of ``BLOCK_PATHS``; block ``b`` draws every random number
from its own generators, seeded by ``SeedSequence(seed).spawn(n_blocks)[b]`` (daily factors and
spikes) and its first child (the per-interval innovations), day after day in a fixed order. Blocks can be processed in any grouping (``paths_per_chunk``) and give identical
results. Time is streamed one market day at a time: only ``(blocks, slots, paths)`` arrays for
one day are held, with per-path monthly sums accumulated (see :class:`SimulationResult`).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy import stats
from scipy.stats import qmc

from risk.calendar import Grid
from risk.hedging import MonthlyPriceAggregates
from risk.results import (
    Accumulators,
    MarketModel,
    SimSettings,
    SimulationResult,
    accumulate,
    count_extremes,
    month_starts,
    peak_counts,
)
from risk.spikes import SpikeState, advance_day, draw_new_events

FloatArray = NDArray[np.float64]
Sampler = Literal["pseudo", "sobol"]
BLOCK_PATHS = 1024
# A Sobol replicate: one independently scrambled point set of this many paths (a power of two,
# so each is a balanced randomised-QMC estimate). A block holds BLOCK_PATHS // 64 = 16 of them,
# so grouped standard errors have 15 degrees of freedom per 1024 paths (one 1024-path point set
# per block gave none at 1024 paths and one at 2048).
SOBOL_REPLICATE_PATHS = 64
# One market day of paths is held in float32 (half the memory traffic of every pass; 7 digits
# are ample for 30-minute prices); every sum across intervals accumulates in float64.
DAY_DTYPE = np.float32
DayArray = NDArray[np.float32]
__all__ = [
    "BLOCK_PATHS",
    "SOBOL_REPLICATE_PATHS",
    "MarketModel",
    "SimulationResult",
    "simulate_market",
]


@dataclass
class _Block:
    rng: np.random.Generator
    fast_rng: np.random.Generator  # per-interval innovations only (drawn a day ahead)
    n: int
    sobol_normals: FloatArray | None  # (n, 3 * n_days) daily innovations


def _blocks(
    n_paths: int, seed: int, sampler: Sampler, n_days: int, antithetic: bool
) -> list[_Block]:
    n_blocks = -(-n_paths // BLOCK_PATHS)
    out = []
    for b, ss in enumerate(np.random.SeedSequence(seed).spawn(n_blocks)):
        n = min(BLOCK_PATHS, n_paths - b * BLOCK_PATHS)
        if antithetic and n % 2:
            raise ValueError(f"antithetic sampling needs an even path count, got {n_paths}")
        rng = np.random.Generator(np.random.PCG64(ss))
        fast_rng = np.random.Generator(np.random.PCG64(ss.spawn(1)[0]))
        sob = None
        if sampler == "sobol":
            sob = _sobol_normals(n, 3 * n_days, rng)
        out.append(_Block(rng, fast_rng, n, sob))
    return out


def _sobol_normals(n: int, dims: int, rng: np.random.Generator) -> FloatArray:
    """``(n, dims)`` normals: consecutive replicates of ``SOBOL_REPLICATE_PATHS`` paths, each the
    64-point Sobol net under its own random linear matrix scramble and digital shift (LMS+shift,
    the randomisation ``scipy.stats.qmc.Sobol(scramble=True)`` applies; drawn from ``rng`` in
    order). A short last replicate takes the first points of its scrambled net.

    The first ``2^m`` Sobol points have ``m`` significant bits per coordinate, so the scramble
    reduces to ``m`` random columns of the lower-triangular matrix (per replicate and dimension):
    the same distribution as scipy's 30-bit scramble at a fraction of its cost (scipy scrambles
    all 30 direction numbers of every dimension: 55 ms per replicate for a year's 1095 dims).

    References
    ----------
    Matousek, J. (1998). On the L2-discrepancy for anchored boxes. J. Complexity 14, 527-556.
    Owen, A.B. (2003). Variance with alternative scramblings of digital nets. ACM TOMACS 13(4).
    """
    bits, m = 30, SOBOL_REPLICATE_PATHS.bit_length() - 1
    base = qmc.Sobol(dims, scramble=False).random(SOBOL_REPLICATE_PATHS)
    digits = (base * 2**bits).astype(np.int64) >> (bits - m)  # (64, dims): m-bit integers
    n_rep = -(-n // SOBOL_REPLICATE_PATHS)
    out = rng.integers(0, 2**bits, size=(n_rep, 1, dims))  # digital shift
    cols = rng.integers(0, 2**bits, size=(m, n_rep, 1, dims))
    for i in range(m):  # input digit i (from the top) -> output digit i and random lower digits
        low = 1 << (bits - 1 - i)
        col = (cols[i] & (low - 1)) | low
        out = out ^ np.where((digits >> (m - 1 - i)) & 1 == 1, col, 0)
    u = (out.reshape(-1, dims)[:n] + 0.5) / 2**bits  # (n_rep * 64, dims), interval midpoints
    return np.asarray(stats.norm.ppf(u))


def _normals(block: _Block, shape: tuple[int, ...], antithetic: bool) -> FloatArray:
    if not antithetic:
        return block.rng.standard_normal(shape)
    half = block.rng.standard_normal((*shape[:-1], shape[-1] // 2))
    return np.concatenate([half, -half], axis=-1)


def _groups(n_paths: int, antithetic: bool, sampler: Sampler) -> NDArray[np.int64]:
    idx = np.arange(n_paths)
    if sampler == "sobol":
        return idx // SOBOL_REPLICATE_PATHS  # blocks are whole replicates
    if antithetic:
        block, pos = idx // BLOCK_PATHS, idx % BLOCK_PATHS
        size = np.minimum(BLOCK_PATHS, n_paths - block * BLOCK_PATHS)
        return block * BLOCK_PATHS + pos % (size // 2)
    return idx


def simulate_market(
    model: MarketModel,
    grid: Grid,
    n_paths: int,
    seed: int,
    *,
    caps_by_fy: dict[int, float],
    floor_per_mwh: float = -1000.0,
    cap_strikes: tuple[float, ...] = (300.0,),
    antithetic: bool = False,
    sampler: Sampler = "pseudo",
    paths_per_chunk: int = 16 * BLOCK_PATHS,
    keep_paths: int = 0,
    draw_ahead: bool = True,
) -> SimulationResult:
    """Simulate ``n_paths`` joint price and load paths over ``grid`` (whole market days).

    Parameters
    ----------
    model : calibrated price and load models.
    grid : the simulated horizon (its start must be a market-day start).
    n_paths, seed : path count and master seed (``SeedSequence.spawn`` per block of paths).
    caps_by_fy : market price cap [$/MWh] by financial year (ending year); prices are clipped to
        ``[floor_per_mwh, cap]`` of the interval's financial year.
    cap_strikes : strikes [$/MWh] whose per-month excess sums are accumulated (cap payoffs).
    antithetic : negate the Gaussian draws in the second half of each block.
    sampler : ``"sobol"`` draws the daily factor innovations from scrambled Sobol sequences
        (an independent scramble per ``SOBOL_REPLICATE_PATHS`` paths; these replicates are the
        groups for standard errors).
    paths_per_chunk : paths processed together (rounded to whole blocks); results do not depend
        on it.
    keep_paths : number of full paths kept (float32) for validation statistics.
    draw_ahead : draw the next day's per-interval innovations in a worker thread while this day
        is computed (numpy releases the GIL while it fills an array). Each block's innovation
        stream is used by one thread in day order, so results are identical either way.
    """
    from risk.calendar import floor_cap_for_fy

    slots = grid.slots_per_day
    n_days = grid.n_intervals // slots
    months, day_month = month_starts(grid)
    f = grid.features()
    _, caps = floor_cap_for_fy(f.fy[::slots], caps_by_fy, floor_per_mwh)
    hour_slots = 60 // grid.interval_minutes
    cfg = SimSettings(
        floor_per_mwh,
        caps,
        tuple(cap_strikes),
        antithetic,
        sampler,
        keep_paths,
        (7 * hour_slots, 22 * hour_slots),
        model.load.spike_uplift,
        draw_ahead,
    )
    blocks = _blocks(n_paths, seed, sampler, n_days, antithetic)
    n_pad = len(blocks) * BLOCK_PATHS
    acc = Accumulators.zeros(len(months), n_pad, len(cap_strikes), grid.n_intervals, keep_paths)
    per_chunk = max(1, paths_per_chunk // BLOCK_PATHS)
    for first in range(0, len(blocks), per_chunk):
        _run_chunk(
            model, grid, blocks[first : first + per_chunk], first * BLOCK_PATHS, day_month, cfg, acc
        )
    agg = MonthlyPriceAggregates(
        months=months,
        hours_per_interval=grid.hours_per_interval,
        n_all=np.bincount(day_month, minlength=len(months)) * slots,
        n_peak=peak_counts(grid, day_month, len(months), cfg.peak_slots),
        price_sum_all=acc.price_all[:, :n_paths],
        price_sum_peak=acc.price_peak[:, :n_paths],
        cap_strikes=list(cap_strikes),
        cap_excess_sum=acc.cap_excess[:, :, :n_paths],
    )
    t = slice(0, n_paths)
    return SimulationResult(
        grid,
        agg,
        acc.cost[:, t],
        acc.energy[:, t],
        acc.energy_peak[:, t],
        acc.spikes[t],
        acc.negatives[t],
        acc.events[t],
        acc.events_expected[t],
        acc.level_ms[:, t],
        acc.slow_ms[:, t],
        acc.driver_ms[:, t],
        _groups(n_paths, antithetic, sampler),
        acc.kept_price,
        acc.kept_load,
    )


@dataclass
class _State:
    level: FloatArray  # (K, 1, nb): daily deviation of the log level
    slow: FloatArray  # slow log level factor
    driver: FloatArray
    fast: FloatArray  # (K, 1, nb)
    spikes: SpikeState  # global path index block * BLOCK_PATHS + j


def _run_chunk(
    model: MarketModel,
    grid: Grid,
    blocks: list[_Block],
    offset: int,
    day_month: NDArray[np.int64],
    cfg: SimSettings,
    acc: Accumulators,
) -> None:
    k, nb = len(blocks), BLOCK_PATHS  # a short last block is padded (padding is trimmed)
    p = model.price
    shape3 = (k, 1, nb)
    # the fast factor is carried in units of its innovation s.d. (see _day)
    fast0 = np.concatenate([_pad(_normals(b, (1, 1, b.n), cfg.antithetic)) for b in blocks])
    fast0 /= np.sqrt(1.0 - np.exp(-2 * p.fast.kappa * p.interval_minutes / 1440.0))
    state = _State(
        np.full(shape3, p.level_now),
        np.full(shape3, p.slow_now),
        np.full(shape3, model.load.driver_now),
        fast0,
        SpikeState.empty(k * nb),
    )
    cols = slice(offset, offset + k * nb)
    slots = grid.slots_per_day
    feats = grid.features(0, grid.n_intervals)
    n_days = grid.n_intervals // slots
    draws = _fast_draws(blocks, slots, n_days, cfg.antithetic, cfg.draw_ahead)
    for d, innovations in enumerate(draws):
        month, weekend = int(feats.month[d * slots]), bool(feats.weekend[d * slots])
        mi = int(day_month[d])
        if d == 0 or day_month[d - 1] != mi:
            acc.level_ms[mi, cols] = state.level.reshape(-1)
            acc.slow_ms[mi, cols] = state.slow.reshape(-1)
            acc.driver_ms[mi, cols] = state.driver.reshape(-1)
        _day(model, blocks, state, innovations, d, month, weekend, mi, cols, cfg, acc)


def _fast_draws(
    blocks: list[_Block], slots: int, n_days: int, antithetic: bool, ahead: bool
) -> Iterator[DayArray]:
    """Each day's per-interval unit innovations ``(K, slots, BLOCK_PATHS)``, in day order.

    With ``ahead``, day ``d + 1`` is drawn by one worker thread while the caller computes day
    ``d``; only two day arrays are alive at once.
    """
    if not ahead:
        for _ in range(n_days):
            yield _draw_fast(blocks, slots, antithetic)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fairshare-draws") as pool:
        pending = pool.submit(_draw_fast, blocks, slots, antithetic)
        for d in range(n_days):
            day = pending.result()
            if d + 1 < n_days:
                pending = pool.submit(_draw_fast, blocks, slots, antithetic)
            yield day


def _pad(x: FloatArray) -> FloatArray:
    """Pad the path axis (last) with zeros to ``BLOCK_PATHS``."""
    if x.shape[-1] == BLOCK_PATHS:
        return x
    width = [(0, 0)] * (x.ndim - 1) + [(0, BLOCK_PATHS - x.shape[-1])]
    return np.pad(x, width)


def _draw_fast(blocks: list[_Block], slots: int, antithetic: bool) -> DayArray:
    buf = np.empty((len(blocks), slots, BLOCK_PATHS), dtype=DAY_DTYPE)
    for i, b in enumerate(blocks):
        n = b.n
        if antithetic:
            half = b.fast_rng.standard_normal((slots, n // 2), dtype=DAY_DTYPE)
            buf[i, :, : n // 2] = half
            np.negative(half, out=buf[i, :, n // 2 : n])
        elif n == BLOCK_PATHS:
            b.fast_rng.standard_normal(out=buf[i], dtype=DAY_DTYPE)
        else:
            buf[i, :, :n] = b.fast_rng.standard_normal((slots, n), dtype=DAY_DTYPE)
        buf[i, :, n:] = 0.0
    return buf


def _draw_daily(blocks: list[_Block], d: int, antithetic: bool) -> FloatArray:
    out = []
    for b in blocks:
        if b.sobol_normals is not None:
            out.append(_pad(b.sobol_normals[:, 3 * d : 3 * d + 3].T))
        else:
            out.append(_pad(_normals(b, (3, b.n), antithetic)))
    return np.stack(out)  # (K, 3, nb)


def _apply_spikes(
    model: MarketModel,
    blocks: list[_Block],
    state: _State,
    month: int,
    price: DayArray,
    slots: int,
) -> tuple[FloatArray, FloatArray, tuple[NDArray[np.int64], ...]]:
    """Write the day's spike cells into ``price``; return event counts and the distinct cells
    ``(block, slot, path)`` hit by an event."""
    p = model.price
    mult = np.exp(
        p.gamma_slow * state.slow
        + p.gamma_level * state.level / 100.0
        + p.gamma_driver * state.driver
        - p.intensity_log_norm
    )
    k, nb = len(blocks), BLOCK_PATHS
    starts, expected = np.zeros((k, nb)), np.zeros((k, nb))
    path, start, length, value, counts, exp_ = draw_new_events(
        p.spikes,
        month,
        [mult[i, 0, : b.n] for i, b in enumerate(blocks)],
        [b.rng for b in blocks],
        slots,
        nb,
    )
    for i, b in enumerate(blocks):
        starts[i, : b.n], expected[i, : b.n] = counts[i], exp_[i]
    ev = advance_day(p.spikes, state.spikes, path, start, length, value, slots)
    where = (ev.cols // nb, ev.rows, ev.cols % nb)
    if ev.rows.size:
        if p.spikes.model == "jump_ou":
            np.add.at(price, where, ev.values.astype(DAY_DTYPE))
        else:
            # a regime spike sets the price to max(base, level); with values in ascending
            # order the last write to a cell hit twice is its maximum (faster than maximum.at)
            order = np.argsort(ev.values, kind="stable")
            cell = tuple(w[order] for w in where)
            price[cell] = np.maximum(price[cell], ev.values[order].astype(DAY_DTYPE))
    # overlapping events hit a cell more than once; the load uplift applies once per cell
    flat = np.unique(np.ravel_multi_index(where, price.shape))
    return starts, expected, np.unravel_index(flat, price.shape)


def _ar1_in_place(z: DayArray, a: float, z0: FloatArray) -> None:
    """``z[:, s] = a z[:, s-1] + z[:, s]`` along the slot axis (``z[:, -1]`` := ``z0``)."""
    z[:, 0:1] += (a * z0).astype(z.dtype)
    tmp = np.empty_like(z[:, 0])
    for s in range(1, z.shape[1]):
        np.multiply(z[:, s - 1], np.float32(a), out=tmp)
        z[:, s] += tmp


def _day(
    model: MarketModel,
    blocks: list[_Block],
    state: _State,
    price: DayArray,
    d: int,
    month: int,
    weekend: bool,
    mi: int,
    cols: slice,
    cfg: SimSettings,
    acc: Accumulators,
) -> None:
    """One market day of every block: ``price`` holds the day's unit innovations on entry
    (Z / sd_f below) and becomes the day's prices in place."""
    slots = price.shape[1]
    p, ld = model.price, model.load
    _, a_f, sd_f = p.fast.ar1(p.interval_minutes / 1440.0)
    daily = _draw_daily(blocks, d, cfg.antithetic)
    _ar1_in_place(price, a_f, state.fast)
    state.fast = price[:, -1:, :].astype(np.float64)
    price *= (sd_f * p.vol_per_mwh[month]).astype(DAY_DTYPE)[None, :, None]
    price += p.shape_per_mwh[month, int(weekend)].astype(DAY_DTYPE)[None, :, None]
    price *= np.exp(state.slow).astype(DAY_DTYPE)
    price += state.level.astype(DAY_DTYPE)
    starts, expected, cells = _apply_spikes(model, blocks, state, month, price, slots)
    floor, cap = DAY_DTYPE(cfg.floor_per_mwh), DAY_DTYPE(cfg.cap_per_mwh_by_day[d])
    np.clip(price, floor, cap, out=price)
    load_shape = ld.shape_kwh[month, int(weekend)]
    accumulate(price, load_shape, np.exp(state.driver[:, 0, :]), cells, weekend, mi, cols, cfg, acc)
    count_extremes(price, cols, acc, p.spikes.threshold_per_mwh)
    acc.events[cols] += starts.reshape(-1)
    acc.events_expected[cols] += expected.reshape(-1)
    if cfg.keep_paths and cols.start == 0:
        _keep(price, load_shape, state, cells, ld.spike_uplift, d, slots, cfg.keep_paths, acc)
    _step_daily_factors(model, state, daily)


def _keep(
    price: DayArray,
    load_shape: FloatArray,
    state: _State,
    cells: tuple[NDArray[np.int64], ...],
    uplift: float,
    d: int,
    slots: int,
    keep: int,
    acc: Accumulators,
) -> None:
    load = load_shape[None, :, None] * np.exp(state.driver)
    load[cells] *= 1.0 + uplift
    rows = slice(d * slots, (d + 1) * slots)
    acc.kept_price[rows] = np.moveaxis(price, 1, 0).reshape(slots, -1)[:, :keep]
    acc.kept_load[rows] = np.moveaxis(load, 1, 0).reshape(slots, -1)[:, :keep]


def _step_daily_factors(model: MarketModel, state: _State, daily: FloatArray) -> None:
    c_l, a_l, sd_l = model.price.level.ar1(1.0)
    c_x, a_x, sd_x = model.load.driver.ar1(1.0)
    rho = model.rho_level_driver
    c_s, a_s, sd_s = model.price.slow.ar1(1.0)
    z1, z2, z3 = daily[:, 0:1, :], daily[:, 1:2, :], daily[:, 2:3, :]
    state.level = c_l + a_l * state.level + sd_l * z1
    state.slow = c_s + a_s * state.slow + sd_s * z3
    state.driver = c_x + a_x * state.driver + sd_x * (rho * z1 + np.sqrt(1 - rho * rho) * z2)
