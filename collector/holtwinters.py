"""Additive Holt-Winters smoothing and forecasting, vectorised across many series at once.

Usage series of thousands of guests are forecast together: the history is one float array of
shape ``[series, time]`` on a regular grid (NaN = unknown) and the recursion steps over time
with numpy operations across all series, so the Python loop runs once per time step, never
once per series.

Model (additive trend, additive season of ``m`` steps, the error-correction form of Hyndman &
Athanasopoulos, which is also what statsmodels' ``ExponentialSmoothing`` computes)::

    l[t]   = alpha * (y[t] - s[t]) + (1 - alpha) * (l[t-1] + b[t-1])
    b[t]   = beta  * (l[t] - l[t-1]) + (1 - beta) * b[t-1]
    s[t+m] = gamma * (y[t] - l[t-1] - b[t-1]) + (1 - gamma) * s[t]
    y^[T+h] = l[T] + h * b[T] + s[T + h - m * floor((h - 1) / m)]    (h = 1, 2, ...)

where ``s[k]`` is the seasonal value that observation ``k`` uses and ``T`` the last observation.
(statsmodels 0.15.0 and older use a stale seasonal value at horizons that are multiples of
``m``, statsmodels issue #9538; the other horizons agree to rounding.)

A missing ``y[t]`` is replaced by its one-step prediction ``l[t-1] + b[t-1] + s[t]``: the level
advances by the trend, the trend and the seasonal value carry over unchanged.

Initialisation (:func:`initial_state`) from the first two seasons of each series, NaN-aware:
with ``M1``, ``M2`` the means of the known values of season 1 and season 2,

- trend ``b0 = (M2 - M1) / m`` (the slope between the two season centres);
- the straight line through ``M1`` at the centre of season 1 with slope ``b0`` is the initial
  trend line; ``l0`` is its value one step before the first observation;
- ``s0[j]`` is the mean over both seasons of the known ``y - line`` at phase ``j`` (0 where
  neither season knows phase ``j``), shifted so the ``m`` values sum to 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class HoltWintersParams:
    """Fixed smoothing factors (no fitting: thousands of series must cost one pass).

    Defaults, read at a 30-minute step with a daily season: ``alpha`` 0.3 lets the level
    follow a change within about an hour (its weight halves every ~2 steps); ``beta`` 0.05
    keeps the trend a slow, half-day memory so a single spike does not tilt it; ``gamma`` 0.2
    lets the daily profile adapt over about three days.
    """

    alpha: float = 0.3
    beta: float = 0.05
    gamma: float = 0.2

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "gamma"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"Holt-Winters {name} must lie in [0, 1], got {value}")


DEFAULT_PARAMS = HoltWintersParams()


@dataclass(frozen=True, slots=True)
class HoltWintersState:
    """Level and trend ``[series]`` and seasonal values ``[series, m]``.

    As an initial state it describes the moment just before the first observation, with
    ``season[:, j]`` belonging to observation ``j``. As a final state (after observation
    ``T-1``) ``season[:, j]`` belongs to the future observation ``T + j``.
    """

    level: FloatArray
    trend: FloatArray
    season: FloatArray


def _nan_mean(values: FloatArray, axis: int) -> FloatArray:
    """Mean of the known (non-NaN) values along ``axis``; NaN where none is known."""
    known = ~np.isnan(values)
    counts = known.sum(axis=axis)
    sums = np.where(known, values, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def initial_state(values: FloatArray, season_length: int) -> HoltWintersState:
    """The documented initial state from the first two seasons of each row of ``values``.

    Rows whose first or second season has no known value get a NaN level and trend.
    """
    m = _check_season(values, season_length)
    first_two = values[:, : 2 * m]
    mean_first = _nan_mean(first_two[:, :m], axis=1)
    mean_second = _nan_mean(first_two[:, m:], axis=1)
    trend = (mean_second - mean_first) / m
    centre = (m - 1) / 2.0
    offsets = np.arange(2 * m, dtype=np.float64) - centre
    line = mean_first[:, None] + trend[:, None] * offsets[None, :]
    detrended = (first_two - line).reshape(values.shape[0], 2, m)
    season = np.nan_to_num(_nan_mean(detrended, axis=1), nan=0.0)
    season -= season.mean(axis=1, keepdims=True)
    level = mean_first - trend * (centre + 1.0)
    return HoltWintersState(level=level, trend=trend, season=season)


def _check_season(values: FloatArray, season_length: int) -> int:
    if values.ndim != 2:
        raise ValueError(f"values must have shape [series, time], got {values.shape}")
    if season_length < 2:
        raise ValueError(f"season length must be at least 2 steps, got {season_length}")
    if values.shape[1] < 2 * season_length:
        raise ValueError(
            f"Holt-Winters needs two full seasons ({2 * season_length} steps), "
            f"the history has {values.shape[1]}"
        )
    return season_length


def smooth(
    values: FloatArray,
    season_length: int,
    *,
    lengths: IntArray | None = None,
    params: HoltWintersParams = DEFAULT_PARAMS,
    init: HoltWintersState | None = None,
) -> HoltWintersState:
    """Run the recursion over each row's history and return its final state.

    ``values`` is ``[series, time]``, NaN for unknown; row ``i`` uses ``values[i, :lengths[i]]``
    (default: the whole row; at least two seasons), so series of different lengths share one
    array. ``init`` defaults to :func:`initial_state`.
    """
    m = _check_season(values, season_length)
    n_series, n_time = values.shape
    ends = np.full(n_series, n_time, dtype=np.int64) if lengths is None else lengths
    if ends.shape != (n_series,) or np.any(ends < 2 * m) or np.any(ends > n_time):
        raise ValueError(f"lengths must hold one value in {2 * m}..{n_time} per series")
    start = initial_state(values, m) if init is None else init
    alpha, beta, gamma = params.alpha, params.beta, params.gamma

    # Time-major copies so that every step reads and writes contiguous rows.
    history = np.ascontiguousarray(values.T)
    season = np.ascontiguousarray(start.season.T, dtype=np.float64)
    level = start.level.astype(np.float64, copy=True)
    trend = start.trend.astype(np.float64, copy=True)
    final_level = level.copy()
    final_trend = trend.copy()
    final_season = start.season.astype(np.float64, copy=True)
    finishing_at = ends - 1

    for t in range(int(ends.max())):
        seasonal = season[t % m]
        base = level + trend
        observed = history[t]
        missing = np.isnan(observed)
        if missing.any():
            observed = np.where(missing, base + seasonal, observed)
        new_level = alpha * (observed - seasonal) + (1.0 - alpha) * base
        trend = beta * (new_level - level) + (1.0 - beta) * trend
        seasonal *= 1.0 - gamma
        seasonal += gamma * (observed - base)
        level = new_level
        done = np.flatnonzero(finishing_at == t)
        if done.size:
            final_level[done] = level[done]
            final_trend[done] = trend[done]
            # Rotate so column j is the seasonal value of future observation t + 1 + j.
            final_season[done] = np.roll(season[:, done].T, -((t + 1) % m), axis=1)
    return HoltWintersState(level=final_level, trend=final_trend, season=final_season)


def predict(state: HoltWintersState, horizon_steps: int) -> FloatArray:
    """Forecasts ``[series, horizon_steps]`` for the steps 1..horizon after a final state."""
    if horizon_steps < 1:
        raise ValueError(f"horizon must be at least one step, got {horizon_steps}")
    m = state.season.shape[1]
    steps = np.arange(1, horizon_steps + 1, dtype=np.float64)
    phases = np.arange(horizon_steps) % m
    return state.level[:, None] + state.trend[:, None] * steps[None, :] + state.season[:, phases]


def forecast(
    values: FloatArray,
    season_length: int,
    horizon_steps: int,
    *,
    lengths: IntArray | None = None,
    params: HoltWintersParams = DEFAULT_PARAMS,
    init: HoltWintersState | None = None,
) -> FloatArray:
    """Forecasts ``[series, horizon_steps]`` following each row's history (see :func:`smooth`)."""
    final = smooth(values, season_length, lengths=lengths, params=params, init=init)
    return predict(final, horizon_steps)
