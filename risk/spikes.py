"""The spike layer of the price model: calibration and daily event generation.

Two models, chosen by name:

- ``regime_switching``: from a normal regime the price enters a spike regime with a probability
  per interval that depends on month and hour (and, through the daily multiplier, on the level
  factor and the demand driver); it stays there a geometric number of intervals (``p_stay``) at a
  level drawn from the empirical distribution of historical spike prices.
- ``jump_ou``: jumps arrive with the same intensity; each adds an excess drawn from the historical
  excess over the base and decays geometrically (``decay`` per interval), an OU with jumps.

Events are generated per market day and per path from Poisson counts, so the cost is proportional
to the number of spikes, not to the number of intervals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from risk.calendar import GridFeatures

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

N_QUANTILES = 201
QUANTILE_GRID = np.linspace(0.0, 1.0, N_QUANTILES)
PRIOR_INTERVALS = 200.0  # shrinkage of (month, hour) start probabilities towards month x hour


@dataclass(frozen=True)
class SpikeParams:
    """Fitted spike layer.

    ``start_prob`` (12, 24): probability per interval of a spike starting, by month and hour;
    ``p_stay``: probability a spike interval is followed by another (regime model);
    ``decay``: per-interval decay of a jump's excess (jump-OU model);
    ``level_quantiles_per_mwh``: quantiles (0..1 in ``N_QUANTILES`` steps) of spike-interval
    prices (regime) or of the excess over the base at spike starts (jump-OU);
    ``mean_duration_intervals``, ``share``: historical figures for the validation report.
    """

    model: str
    threshold_per_mwh: float
    start_prob: FloatArray
    p_stay: float
    decay: float
    level_quantiles_per_mwh: FloatArray
    mean_duration_intervals: float
    share: float

    def to_dict(self) -> dict[str, object]:
        """JSON-ready parameters."""
        return {
            "model": self.model,
            "threshold_per_mwh": self.threshold_per_mwh,
            "start_prob_by_month_hour": self.start_prob.tolist(),
            "p_stay": self.p_stay,
            "decay": self.decay,
            "level_quantiles_per_mwh": self.level_quantiles_per_mwh.tolist(),
            "mean_duration_intervals": self.mean_duration_intervals,
            "historical_share": self.share,
        }


def run_lengths(mask: NDArray[np.bool_]) -> IntArray:
    """Lengths of the runs of consecutive True values in ``mask``."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.diff(padded)
    return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


def calibrate_spikes(
    price: FloatArray,
    spike: NDArray[np.bool_],
    valid: NDArray[np.bool_],
    f: GridFeatures,
    fitted_base: FloatArray,
    model: str,
    slots: int,
    threshold_per_mwh: float,
    at_risk_weight: FloatArray | None = None,
) -> SpikeParams:
    """Fit start probabilities, persistence and level distribution of spikes.

    ``at_risk_weight`` (per interval) is the intensity multiplier of the day (level factor and
    demand driver), so that the (month, hour) profile is estimated net of those effects.
    """
    prev = np.concatenate([[False], spike[:-1]])
    starts = spike & ~prev
    at_risk = valid & ~prev
    hour = f.slot * 24 // slots
    cell = f.month * 24 + hour
    n_start = np.bincount(cell, weights=starts.astype(float), minlength=288).reshape(12, 24)
    w = at_risk.astype(float) if at_risk_weight is None else at_risk * at_risk_weight
    n_risk = np.bincount(cell, weights=w, minlength=288).reshape(12, 24)
    # prior: month effect x hour effect (independence); each cell is shrunk towards it
    rate = n_start.sum() / max(n_risk.sum(), 1.0)
    month_rate = n_start.sum(axis=1, keepdims=True) / np.maximum(
        n_risk.sum(axis=1, keepdims=True), 1
    )
    hour_rate = n_start.sum(axis=0, keepdims=True) / np.maximum(
        n_risk.sum(axis=0, keepdims=True), 1
    )
    prior = month_rate * hour_rate / max(rate, 1e-12)
    start_prob = (n_start + PRIOR_INTERVALS * prior) / (n_risk + PRIOR_INTERVALS)
    runs = run_lengths(spike)
    mean_dur = float(runs.mean()) if runs.size else 1.0
    q = np.linspace(0.0, 1.0, N_QUANTILES)
    if model == "jump_ou":
        excess = (price - fitted_base)[starts]
        levels = np.quantile(excess, q) if excess.size else np.zeros_like(q)
        decay = _fit_decay(price - fitted_base, spike)
    else:
        levels = np.quantile(price[spike], q) if spike.any() else np.zeros_like(q)
        decay = 0.0
    return SpikeParams(
        model=model,
        threshold_per_mwh=threshold_per_mwh,
        start_prob=start_prob,
        p_stay=float(1.0 - 1.0 / max(mean_dur, 1.0)),
        decay=decay,
        level_quantiles_per_mwh=levels,
        mean_duration_intervals=mean_dur,
        share=float(spike.sum() / max(valid.sum(), 1)),
    )


def _fit_decay(excess: FloatArray, spike: NDArray[np.bool_]) -> float:
    """Median one-step ratio of the excess over the base after a spike interval."""
    x0, x1 = excess[:-1], excess[1:]
    ok = spike[:-1] & (x0 > 0) & np.isfinite(x1)
    if ok.sum() < 3:
        return 0.5
    return float(np.clip(np.median(np.maximum(x1[ok], 0.0) / x0[ok]), 0.05, 0.98))


@dataclass
class SpikeState:
    """Spike carried into the next day per path: remaining intervals and level (regime) or the
    current excess (jump-OU)."""

    remaining: IntArray
    level: FloatArray

    @classmethod
    def empty(cls, n_paths: int) -> SpikeState:
        """No spike in progress."""
        return cls(np.zeros(n_paths, dtype=np.int64), np.zeros(n_paths))


@dataclass(frozen=True)
class DayEvents:
    """Spike cells of one day: row (slot), column (path) and value [$/MWh]; ``starts`` counts
    the new events per path and ``expected`` their Poisson mean."""

    rows: IntArray
    cols: IntArray
    values: FloatArray
    starts: IntArray
    expected: FloatArray


def _expand(
    start: IntArray, length: IntArray, path: IntArray, value: FloatArray, decay: float, slots: int
) -> tuple[DayEvents, IntArray, IntArray, FloatArray]:
    """Cells of events within the day, and what spills over midnight."""
    end = start + length
    in_day = np.minimum(end, slots) - start
    total = int(in_day.sum())
    offsets = np.arange(total) - np.repeat(np.cumsum(in_day) - in_day, in_day)
    rows = np.repeat(start, in_day) + offsets
    vals = np.repeat(value, in_day)
    if decay > 0:
        vals = vals * decay**offsets
    spill = end > slots
    carry_value = value[spill] * (decay ** in_day[spill] if decay > 0 else 1.0)
    empty_i, empty_f = np.zeros(0, dtype=np.int64), np.zeros(0)
    return (
        DayEvents(rows, np.repeat(path, in_day), vals, empty_i, empty_f),
        path[spill],
        (end - slots)[spill],
        carry_value,
    )


def draw_new_events(
    params: SpikeParams,
    month: int,
    multipliers: list[FloatArray],
    rngs: list[np.random.Generator],
    slots: int,
    block_paths: int,
) -> tuple[IntArray, IntArray, IntArray, FloatArray, list[IntArray], list[FloatArray]]:
    """New spike events of one market day for every block of paths.

    ``multipliers[b]`` (paths of block ``b``) scales the day's start intensity per path (level
    factor and demand driver); block ``b`` draws only from ``rngs[b]``, in a fixed order (counts,
    start uniforms, level uniforms, durations). Counts are Poisson with mean
    ``multiplier x sum(start_prob)`` over the day's slots; start slots follow the within-day
    profile; levels come from the fitted quantiles. Returns ``(path, start, length, value)`` with
    global path indices ``b x block_paths + j`` and, per block, the counts and their means.
    """
    p_slot = params.start_prob[month, np.arange(slots) * 24 // slots]
    total = float(p_slot.sum())
    cum = np.cumsum(p_slot) / max(total, 1e-300)
    counts, expected, paths, u_start, u_level, lengths = [], [], [], [], [], []
    for b, (mult, rng) in enumerate(zip(multipliers, rngs, strict=True)):
        exp_b = mult * total
        c_b = rng.poisson(exp_b)
        n = int(c_b.sum())
        u_start.append(rng.random(n))
        u_level.append(rng.random(n))
        if params.model != "jump_ou":
            lengths.append(rng.geometric(1.0 - params.p_stay, n))
        counts.append(c_b)
        expected.append(exp_b)
        paths.append(np.repeat(np.arange(mult.size) + b * block_paths, c_b))
    path = np.concatenate(paths)
    start = np.minimum(np.searchsorted(cum, np.concatenate(u_start)), slots - 1)
    value = np.interp(np.concatenate(u_level), QUANTILE_GRID, params.level_quantiles_per_mwh)
    if params.model == "jump_ou":
        length = np.full(path.size, _jump_length(params.decay))
    else:
        length = np.concatenate(lengths)
    return path, start, length, value, counts, expected


def advance_day(
    params: SpikeParams,
    state: SpikeState,
    path: IntArray,
    start: IntArray,
    length: IntArray,
    value: FloatArray,
    slots: int,
) -> DayEvents:
    """Cells of the day's new and carried spikes; updates ``state`` with what spills over."""
    carried = np.flatnonzero(state.remaining > 0)
    start = np.concatenate([np.zeros(carried.size, dtype=np.int64), start])
    length = np.concatenate([state.remaining[carried], length])
    path = np.concatenate([carried, path])
    value = np.concatenate([state.level[carried], value])
    decay = params.decay if params.model == "jump_ou" else 0.0
    events, spill_path, spill_len, spill_val = _expand(start, length, path, value, decay, slots)
    state.remaining[carried] = 0
    state.level[carried] = 0.0
    state.remaining[spill_path] = spill_len
    state.level[spill_path] = spill_val
    return events


def draw_day_events(
    params: SpikeParams,
    month: int,
    multiplier: FloatArray,
    state: SpikeState,
    rng: np.random.Generator,
    slots: int,
) -> DayEvents:
    """New and carried spike cells of one market day of one block of paths (updates ``state``)."""
    path, start, length, value, counts, expected = draw_new_events(
        params, month, [multiplier], [rng], slots, multiplier.size
    )
    ev = advance_day(params, state, path, start, length, value, slots)
    return DayEvents(ev.rows, ev.cols, ev.values, counts[0], expected[0])


def _jump_length(decay: float, tol: float = 0.01) -> int:
    """Intervals until a jump's excess decays below ``tol`` of its size."""
    return max(1, int(np.ceil(np.log(tol) / np.log(max(decay, 1e-6)))))
