"""Tests for collector.smoothing (characteristic views, EWMA frame) and collector.holtwinters."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from statsmodels.tsa.holtwinters import ExponentialSmoothing

from collector import holtwinters as hw
from collector.smoothing import characteristic, ewma_frame, infer_step

HALF_HOUR = 1800
DAY_STEPS = 48  # a daily season at a 30-minute step
T0 = 1_700_000_000 - 1_700_000_000 % 86400  # a midnight, so day phases are easy to read


def reference_ewma(times: list[int], values: list[float | None], half_life: float) -> list[float]:
    """The documented recursion, written out: known values only, weight from the time gap."""
    out: list[float] = []
    previous_time: int | None = None
    smoothed = math.nan
    for time, value in zip(times, values, strict=True):
        if value is None:
            continue
        if previous_time is None:
            smoothed = value
        else:
            weight = 1.0 - 2.0 ** (-(time - previous_time) / half_life)
            smoothed = weight * value + (1.0 - weight) * smoothed
        previous_time = time
        out.append(smoothed)
    return out


def random_frame(seed: int, n_ids: int = 12, step: int = 60) -> pl.DataFrame:
    """Ids with different lengths, dropped rows (gaps), nulls, and one all-null id; shuffled."""
    rng = np.random.default_rng(seed)
    parts = []
    for index in range(n_ids):
        length = int(rng.integers(1, 40))
        times = T0 + step * np.sort(rng.choice(60, size=length, replace=False))
        cpu = rng.gamma(2.0, 0.5, size=length)
        mem = rng.uniform(1e9, 8e9, size=length)
        cpu_list = [None if rng.random() < 0.2 else float(v) for v in cpu]
        mem_list = [None if rng.random() < 0.2 else float(v) for v in mem]
        if index == n_ids - 1:
            cpu_list = [None] * length
            mem_list = [None] * length
        parts.append(
            pl.DataFrame(
                {"id": f"vm{index:03d}", "time": times, "cpu": cpu_list, "mem": mem_list},
                schema={"id": pl.Utf8, "time": pl.Int64, "cpu": pl.Float64, "mem": pl.Float64},
            )
        )
    frame = pl.concat(parts)
    return frame.sample(fraction=1.0, shuffle=True, seed=seed)


def per_id(frame: pl.DataFrame, column: str) -> dict[str, tuple[list[int], list[float | None]]]:
    ordered = frame.sort("id", "time")
    result = {}
    for (ident,), group in ordered.group_by("id", maintain_order=True):
        result[str(ident)] = (group["time"].to_list(), group[column].to_list())
    return result


def as_dict(result: pl.DataFrame, column: str) -> dict[str, float | None]:
    return dict(zip(result["id"].to_list(), result[column].to_list(), strict=True))


# --- EWMA ---------------------------------------------------------------------------------


def test_ewma_tiny_series_by_hand() -> None:
    frame = pl.DataFrame(
        {"id": ["a"] * 5, "time": [0, 60, 120, 240, 300], "cpu": [1.0, None, 3.0, 4.0, None]},
        schema={"id": pl.Utf8, "time": pl.Int64, "cpu": pl.Float64},
    )
    half_life = 60.0
    # y0 = 1; at t=120 the gap to the last KNOWN value is 120 s: a = 1 - 2^-2 = 0.75;
    # at t=240 the gap is again 120 s (the row at 180 is missing), a = 0.75.
    after_120 = 0.75 * 3.0 + 0.25 * 1.0
    expected = 0.75 * 4.0 + 0.25 * after_120
    result = characteristic(frame, ["cpu"], "ewma", half_life_s=half_life)
    assert result["cpu"][0] == pytest.approx(expected, rel=1e-12)
    assert result["time"][0] == 240  # newest timestamp with a known value
    assert result["points"][0] == 3
    smoothed = ewma_frame(frame, ["cpu"], half_life)
    assert smoothed["cpu"].to_list() == pytest.approx([1.0, None, after_120, expected, None])


@pytest.mark.parametrize("half_life", [30.0, 600.0, 90.5])
def test_ewma_matches_recursion_with_gaps_and_nulls(half_life: float) -> None:
    frame = random_frame(seed=7)
    result = as_dict(characteristic(frame, ["cpu", "mem"], "ewma", half_life_s=half_life), "cpu")
    smoothed_frame = ewma_frame(frame, ["cpu", "mem"], half_life)
    assert smoothed_frame.shape == frame.shape
    assert smoothed_frame["id"].to_list() == frame["id"].to_list()  # same row order
    smoothed = per_id(smoothed_frame, "cpu")
    for ident, (times, values) in per_id(frame, "cpu").items():
        expected = reference_ewma(times, values, half_life)
        got_series = [v for v in smoothed[ident][1] if v is not None]
        assert got_series == pytest.approx(expected, rel=1e-9)
        if expected:
            assert result[ident] == pytest.approx(expected[-1], rel=1e-9)
        else:
            assert result[ident] is None


def test_ewma_ignores_values_far_older_than_the_newest() -> None:
    frame = pl.DataFrame(
        {"id": ["a", "a", "a"], "time": [0, 10, 2_000_000], "cpu": [5.0, 7.0, 2.0]},
        schema={"id": pl.Utf8, "time": pl.Int64, "cpu": pl.Float64},
    )
    result = characteristic(frame, ["cpu"], "ewma", half_life_s=60)
    assert result["cpu"][0] == pytest.approx(2.0, rel=1e-12)


def test_ewma_of_a_column_that_stopped_long_before_the_others() -> None:
    # cpu stops 2,000 half-lives before the newest row: its weights must not underflow to 0.
    times = [0, 60, 90, 120_000]
    cpu = [4.0, 1.0, 2.0, None]
    frame = pl.DataFrame(
        {"id": ["a"] * 4, "time": times, "cpu": cpu, "mem": [1.0, 2.0, 3.0, 4.0]},
        schema={"id": pl.Utf8, "time": pl.Int64, "cpu": pl.Float64, "mem": pl.Float64},
    )
    result = characteristic(frame, ["cpu", "mem"], "ewma", half_life_s=60)
    assert result["cpu"][0] == pytest.approx(reference_ewma(times, cpu, 60)[-1], rel=1e-12)
    assert result["mem"][0] == pytest.approx(4.0, rel=1e-12)


# --- last, max, p95, nulls ----------------------------------------------------------------


def test_last_max_p95_against_numpy() -> None:
    frame = random_frame(seed=3)
    last = characteristic(frame, ["cpu", "mem"], "last")
    top = characteristic(frame, ["cpu", "mem"], "max")
    p95 = characteristic(frame, ["cpu", "mem"], "p95")
    for column in ("cpu", "mem"):
        for ident, (_, values) in per_id(frame, column).items():
            known = np.array([v for v in values if v is not None], dtype=np.float64)
            if known.size == 0:
                assert as_dict(last, column)[ident] is None
                assert as_dict(top, column)[ident] is None
                assert as_dict(p95, column)[ident] is None
                continue
            assert as_dict(last, column)[ident] == known[-1]
            assert as_dict(top, column)[ident] == known.max()
            # Linear interpolation between closest ranks: numpy's default method="linear".
            expected = np.percentile(known, 95, method="linear")
            assert as_dict(p95, column)[ident] == pytest.approx(expected, rel=1e-12)


def test_all_null_id_gives_nulls_and_others_unaffected() -> None:
    frame = pl.DataFrame(
        {
            "id": ["off", "off", "on", "on"],
            "time": [0, 60, 0, 60],
            "cpu": [None, None, 0.5, 0.25],
            "mem": [None, None, None, 4.0],
        },
        schema={"id": pl.Utf8, "time": pl.Int64, "cpu": pl.Float64, "mem": pl.Float64},
    )
    for view in ("last", "ewma", "p95", "max", "forecast"):
        result = characteristic(frame, ["cpu", "mem"], view)
        rows = {row["id"]: row for row in result.iter_rows(named=True)}
        assert rows["off"]["cpu"] is None, view
        assert rows["off"]["mem"] is None, view
        assert rows["off"]["time"] is None, view
        assert rows["off"]["points"] == 0, view
        assert rows["off"]["fallback"] is False, view
        assert rows["on"]["mem"] == 4.0, view
        assert rows["on"]["time"] == 60, view
        assert rows["on"]["points"] == 2, view
    assert characteristic(frame, ["cpu"], "max")["cpu"].to_list() == [None, 0.5]


def test_nan_is_unknown_not_a_value() -> None:
    frame = pl.DataFrame(
        {"id": ["a", "a", "a"], "time": [0, 60, 120], "cpu": [1.0, 3.0, float("nan")]},
        schema={"id": pl.Utf8, "time": pl.Int64, "cpu": pl.Float64},
    )
    assert characteristic(frame, ["cpu"], "last")["cpu"][0] == 3.0
    assert characteristic(frame, ["cpu"], "max")["time"][0] == 60
    ewma = characteristic(frame, ["cpu"], "ewma", half_life_s=60)
    # One half-life after the first value: weight 1/2 on each of 1.0 and 3.0.
    assert ewma["cpu"][0] == pytest.approx(2.0, rel=1e-12)
    assert ewma["time"][0] == 60
    assert ewma["points"][0] == 2


def test_row_order_does_not_matter() -> None:
    frame = random_frame(seed=11)
    ordered = frame.sort("id", "time")
    for view in ("last", "ewma", "p95", "max"):
        shuffled_result = characteristic(frame, ["cpu", "mem"], view)
        ordered_result = characteristic(ordered, ["cpu", "mem"], view)
        assert shuffled_result.equals(ordered_result), view
        assert shuffled_result["id"].is_sorted()


def test_contiguous_blocks_are_used_as_given_or_sorted_when_needed() -> None:
    ordered = random_frame(seed=13).sort("id", "time")
    blocks_descending = ordered.sort("id", "time", descending=[True, False])
    times_backwards = ordered.sort("id", "time", descending=[False, True])
    for view in ("last", "ewma", "max"):
        expected = characteristic(ordered, ["cpu", "mem"], view)
        assert characteristic(blocks_descending, ["cpu", "mem"], view).equals(expected), view
        assert characteristic(times_backwards, ["cpu", "mem"], view).equals(expected), view


def test_empty_frame_gives_empty_result() -> None:
    frame = pl.DataFrame(schema={"id": pl.Utf8, "time": pl.Int64, "cpu": pl.Float64})
    for view in ("last", "ewma", "p95", "max", "forecast"):
        result = characteristic(frame, ["cpu"], view)
        assert result.columns == ["id", "cpu", "time", "points", "fallback"]
        assert result.height == 0
    assert ewma_frame(frame, ["cpu"], 60).height == 0


def test_bad_input_is_named() -> None:
    frame = pl.DataFrame(
        {"id": ["a", "b"], "time": [0, None], "cpu": [1.0, 2.0]},
        schema={"id": pl.Utf8, "time": pl.Int64, "cpu": pl.Float64},
    )
    with pytest.raises(ValueError, match=r"null 'time'.*'b'"):
        characteristic(frame, ["cpu"], "last")
    with pytest.raises(ValueError, match="memory"):
        characteristic(frame, ["memory"], "last")
    with pytest.raises(TypeError, match="integer unix seconds"):
        characteristic(frame.with_columns(pl.col("time").cast(pl.Float64)), ["cpu"], "last")
    with pytest.raises(ValueError, match="unknown view"):
        characteristic(frame, ["cpu"], "median")  # type: ignore[arg-type]
    regular = pl.DataFrame(
        {"id": ["a"] * 3, "time": [0, 700, 1400], "cpu": [1.0, 2.0, 3.0]},
        schema={"id": pl.Utf8, "time": pl.Int64, "cpu": pl.Float64},
    )
    with pytest.raises(ValueError, match="not a whole number of 700 s steps"):
        characteristic(regular, ["cpu"], "forecast")


def test_infer_step_ignores_gaps() -> None:
    frame = pl.DataFrame(
        {"id": ["a"] * 5 + ["b"] * 3, "time": [0, 60, 120, 600, 660, 0, 60, 300]},
        schema={"id": pl.Utf8, "time": pl.Int64},
    )
    assert infer_step(frame) == 60
    assert infer_step(frame.head(1)) is None


# --- Holt-Winters against statsmodels -----------------------------------------------------


def statsmodels_fit(series: np.ndarray, m: int, state: hw.HoltWintersState, row: int):
    params = hw.DEFAULT_PARAMS
    model = ExponentialSmoothing(
        series,
        trend="add",
        seasonal="add",
        seasonal_periods=m,
        initialization_method="known",
        initial_level=state.level[row],
        initial_trend=state.trend[row],
        initial_seasonal=state.season[row],
    )
    return model.fit(
        smoothing_level=params.alpha,
        smoothing_trend=params.beta,
        smoothing_seasonal=params.gamma,
        optimized=False,
    )


def random_seasonal(rng: np.random.Generator, n_series: int, length: int, m: int) -> np.ndarray:
    steps = np.arange(length)
    phase = rng.uniform(0, 2 * np.pi, size=(n_series, 1))
    return (
        rng.uniform(5, 20, size=(n_series, 1))
        + rng.uniform(1, 4, size=(n_series, 1)) * np.sin(2 * np.pi * steps / m + phase)
        + rng.normal(0.01, 0.05, size=(n_series, 1)) * steps
        + rng.normal(0, 0.5, size=(n_series, length))
    )


def test_holtwinters_matches_statsmodels() -> None:
    rng = np.random.default_rng(42)
    m, length = 12, 5 * 12 + 5
    values = random_seasonal(rng, 4, length, m)
    init = hw.initial_state(values, m)
    horizon = 2 * m + 3
    ours = hw.forecast(values, m, horizon, init=init)
    final = hw.smooth(values, m, init=init)
    for row in range(values.shape[0]):
        fit = statsmodels_fit(values[row], m, init, row)
        theirs = fit.forecast(horizon)
        # statsmodels < 0.15.1 reuses a stale seasonal value at horizons that are multiples of
        # m (statsmodels issue #9538); those steps are checked against its own final state.
        regular = (np.arange(1, horizon + 1) % m) != 0
        np.testing.assert_allclose(ours[row, regular], theirs[regular], rtol=1e-8)
        assert final.level[row] == pytest.approx(fit.level[-1], rel=1e-8)
        assert final.trend[row] == pytest.approx(fit.trend[-1], rel=1e-8, abs=1e-12)
        np.testing.assert_allclose(final.season[row], fit.season[-m:], rtol=1e-8, atol=1e-10)
        for h in range(m, horizon + 1, m):
            textbook = fit.level[-1] + h * fit.trend[-1] + fit.season[-m:][(h - 1) % m]
            assert ours[row, h - 1] == pytest.approx(textbook, rel=1e-8)


def test_holtwinters_missing_values_carry_the_one_step_prediction() -> None:
    rng = np.random.default_rng(5)
    m, length = 8, 40
    values = random_seasonal(rng, 1, length, m)
    missing = [3, 17, 18, 30]
    values[0, missing] = np.nan
    init = hw.initial_state(values, m)
    # Fill each gap with statsmodels' own one-step forecast from the prefix before it.
    filled = values[0].copy()
    for position in missing:
        prefix_fit = statsmodels_fit(filled[:position], m, init, 0)
        filled[position] = prefix_fit.forecast(1)[0]
    fit = statsmodels_fit(filled, m, init, 0)
    ours = hw.forecast(values, m, m - 1, init=init)[0]
    np.testing.assert_allclose(ours, fit.forecast(m - 1), rtol=1e-8)


def test_holtwinters_rows_of_different_lengths_share_one_array() -> None:
    rng = np.random.default_rng(9)
    m = 6
    values = random_seasonal(rng, 3, 30, m)
    lengths = np.array([30, 14, 21], dtype=np.int64)
    padded = values.copy()
    for row, length in enumerate(lengths):
        padded[row, length:] = 123.0  # garbage past the end must be ignored
    batched = hw.forecast(padded, m, 5, lengths=lengths)
    for row, length in enumerate(lengths):
        alone = hw.forecast(values[row : row + 1, :length], m, 5)
        np.testing.assert_allclose(batched[row], alone[0], rtol=1e-12)


def test_initial_state_is_documented_heuristic() -> None:
    m = 4
    line = 10.0 + 0.5 * np.arange(2 * m)
    bumps = np.array([1.0, -1.0, 2.0, -2.0])
    values = (line + np.tile(bumps, 2))[None, :]
    state = hw.initial_state(values, m)
    assert state.trend[0] == pytest.approx(0.5)
    assert state.level[0] == pytest.approx(10.0 - 0.5)  # one step before the first value
    np.testing.assert_allclose(state.season[0], bumps)


# --- forecast view --------------------------------------------------------------------------


def seasonal_frame(ident: str, days: float, end_phase_steps: int, noise: float, seed: int):
    rng = np.random.default_rng(seed)
    count = int(days * DAY_STEPS) + end_phase_steps
    steps = np.arange(count)
    load = 2.0 + 1.5 * np.sin(2 * np.pi * steps / DAY_STEPS) + rng.normal(0, noise, count)
    return pl.DataFrame(
        {"id": ident, "time": T0 + HALF_HOUR * steps, "cpu": load},
        schema={"id": pl.Utf8, "time": pl.Int64, "cpu": pl.Float64},
    )


def true_next_hour_mean(last_step: int) -> float:
    future = np.array([last_step + 1, last_step + 2])
    return float(np.mean(2.0 + 1.5 * np.sin(2 * np.pi * future / DAY_STEPS)))


def test_forecast_follows_the_daily_season() -> None:
    # Two ids ending at different times of day: the forecast must follow each one's season.
    rising = seasonal_frame("rising", 7, 44, noise=0.05, seed=1)  # ends climbing out of the trough
    falling = seasonal_frame("falling", 7, 20, noise=0.05, seed=2)  # ends sliding down the peak
    frame = pl.concat([rising, falling])
    forecast = as_dict(characteristic(frame, ["cpu"], "forecast", horizon_s=3600), "cpu")
    ewma = as_dict(characteristic(frame, ["cpu"], "ewma", half_life_s=3600), "cpu")
    for ident, part in (("rising", rising), ("falling", falling)):
        truth = true_next_hour_mean(part.height - 1)
        assert forecast[ident] == pytest.approx(truth, abs=0.1), ident
        lagging = ewma[ident]
        assert lagging is not None
        assert abs(lagging - truth) > 0.2, ident  # a lagging mean misses the turn


def test_forecast_equals_holtwinters_on_the_grid_with_gaps() -> None:
    part = seasonal_frame("vm1", 3, 5, noise=0.3, seed=4)
    dropped_rows = [7, 8, 60, 100]
    frame = part.with_row_index("row").filter(~pl.col("row").is_in(dropped_rows)).drop("row")
    frame = frame.with_columns(
        pl.when(pl.col("time") == T0 + HALF_HOUR * 20).then(None).otherwise("cpu").alias("cpu")
    )
    history = part["cpu"].to_numpy().copy()
    history[[*dropped_rows, 20]] = np.nan
    expected = np.maximum(hw.forecast(history[None, :], DAY_STEPS, 3), 0.0)[0]
    mean = characteristic(frame, ["cpu"], "forecast", horizon_s=5400)
    peak = characteristic(frame, ["cpu"], "forecast", horizon_s=5400, forecast_stat="max")
    assert mean["fallback"].to_list() == [False]
    assert mean["cpu"][0] == pytest.approx(expected.mean(), rel=1e-12)
    assert peak["cpu"][0] == pytest.approx(expected.max(), rel=1e-12)


def test_forecast_falls_back_to_ewma_with_short_history() -> None:
    short = seasonal_frame("short", 1.5, 0, noise=0.1, seed=5)
    first_season_gappy = (pl.col("time") < T0 + HALF_HOUR * DAY_STEPS) & (
        (pl.col("time") - T0) % (8 * HALF_HOUR) != 0
    )
    sparse = seasonal_frame("sparse", 3, 0, noise=0.1, seed=6).with_columns(
        pl.when(first_season_gappy).then(None).otherwise("cpu").alias("cpu")
    )  # only 6 of the 48 first-season points are known
    full = seasonal_frame("full", 3, 0, noise=0.1, seed=7)
    frame = pl.concat([short, sparse, full])
    result = characteristic(frame, ["cpu"], "forecast", half_life_s=900)
    ewma = as_dict(characteristic(frame, ["cpu"], "ewma", half_life_s=900), "cpu")
    fallback = as_dict(result, "fallback")
    assert fallback == {"full": False, "short": True, "sparse": True}
    values = as_dict(result, "cpu")
    assert values["short"] == ewma["short"]
    assert values["sparse"] == ewma["sparse"]
    assert values["full"] != ewma["full"]


def test_forecast_with_minute_step_and_a_day_of_history_falls_back() -> None:
    frame = pl.DataFrame(
        {"id": "vm", "time": T0 + 60 * np.arange(1440), "cpu": np.linspace(0.1, 0.9, 1440)},
        schema={"id": pl.Utf8, "time": pl.Int64, "cpu": pl.Float64},
    )
    result = characteristic(frame, ["cpu"], "forecast")
    assert result["fallback"][0] is True
    assert result["cpu"][0] == characteristic(frame, ["cpu"], "ewma")["cpu"][0]


def test_forecast_fallback_flags_the_id_when_any_column_falls_back() -> None:
    part = seasonal_frame("vm", 3, 0, noise=0.1, seed=8)
    late_mem = pl.when(pl.col("time") >= T0 + HALF_HOUR * 100).then(pl.col("cpu") * 1e9)
    frame = part.with_columns(late_mem.alias("mem"))  # mem known for under two seasons
    both = characteristic(frame, ["cpu", "mem"], "forecast")
    cpu_only = characteristic(part, ["cpu"], "forecast")
    mem_ewma = characteristic(frame, ["mem"], "ewma")
    assert both["fallback"].to_list() == [True]
    assert cpu_only["fallback"].to_list() == [False]
    assert both["cpu"][0] == cpu_only["cpu"][0]
    assert both["mem"][0] == mem_ewma["mem"][0]
