"""The latency protocol: figures from interleaved rounds, ratios paired by round, isolation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from edgetune.errors import InputError
from edgetune.objectives.isolation import measurement_cores, run_pinned
from edgetune.objectives.latency import Latency, MeasureConfig, measure, median_interval, ratio
from edgetune.objectives.target import TargetConfig

TARGET = TargetConfig(threads=1, batch_size=1, sequence_length=16)
PROTOCOL = MeasureConfig(warmup=1, rounds=3, max_rounds=3, runs=4, inputs=2)


def inputs(count: int = 2) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{"input_ids": rng.integers(0, 20, (1, 16)), "token_type_ids": np.zeros((1, 16), int),
             "attention_mask": np.ones((1, 16), int)} for _ in range(count)]


def latency(round_medians: list[float]) -> Latency:
    return Latency(median_ms=float(np.median(round_medians)), p90_ms=max(round_medians),
                   spread=0.0, round_medians_ms=round_medians, round_means_ms=round_medians)


def test_every_model_gets_its_median_of_round_medians_p90_and_spread(tiny_onnx: Path,
                                                                     slow_onnx: Path) -> None:
    figures = measure({"tiny": tiny_onnx, "slow": slow_onnx}, inputs(), TARGET, PROTOCOL)
    assert set(figures) == {"tiny", "slow"}
    for figure in figures.values():
        assert len(figure.round_medians_ms) == PROTOCOL.rounds
        assert figure.median_ms == pytest.approx(float(np.median(figure.round_medians_ms)))
        assert figure.p90_ms >= min(figure.round_medians_ms)
        spread = (max(figure.round_medians_ms) - min(figure.round_medians_ms)) / figure.median_ms
        assert figure.spread == pytest.approx(spread)
    assert figures["slow"].median_ms > figures["tiny"].median_ms


def test_load_that_slows_both_models_in_a_round_does_not_move_the_ratio() -> None:
    candidate = latency([5.0, 10.0, 5.0, 15.0])  # rounds 2 and 4 ran on a loaded machine
    reference = latency([10.0, 20.0, 10.0, 30.0])
    assert ratio(candidate, reference).value == pytest.approx(0.5)
    assert ratio(candidate, reference).spread == pytest.approx(0.0)


def test_the_ratio_is_the_median_over_rounds_and_its_spread_is_kept() -> None:
    candidate = latency([5.0, 6.0, 4.0])
    reference = latency([10.0, 10.0, 10.0])
    assert ratio(candidate, reference).value == pytest.approx(0.5)
    assert ratio(candidate, reference).spread == pytest.approx((0.6 - 0.4) / 0.5)


def test_with_a_reference_rounds_are_added_until_the_ratio_is_precise(
        tiny_onnx: Path, slow_onnx: Path) -> None:
    models = {"tiny": tiny_onnx, "slow": slow_onnx}
    adaptive = PROTOCOL.model_copy(update={"rounds": 3, "max_rounds": 9})
    loose = measure(models, inputs(), TARGET, adaptive.model_copy(update={"precision": 10.0}),
                    reference="tiny")
    assert len(loose["slow"].round_medians_ms) == 3  # precise enough at the minimum
    strict = measure(models, inputs(), TARGET, adaptive.model_copy(update={"precision": 1e-9}),
                     reference="tiny")
    assert len(strict["slow"].round_medians_ms) == 9  # never precise enough: the maximum
    assert len(strict["tiny"].round_medians_ms) == 9
    without = measure(models, inputs(), TARGET, adaptive.model_copy(update={"precision": 1e-9}))
    assert len(without["slow"].round_medians_ms) == 3  # nothing to be precise about


def test_the_ratio_interval_covers_the_median_at_least_95_percent_of_the_time() -> None:
    """Per-round ratios under load are skewed: a lognormal stands in for them. (Below 6 rounds
    even the whole range covers less than 95%: 1 - 2 / 2**rounds.)"""
    rng = np.random.default_rng(0)
    true_median = 1.0  # of a lognormal with mu = 0
    for rounds in (6, 15, 40):
        hits = 0
        for _ in range(2000):
            low, high = median_interval(list(rng.lognormal(0.0, 0.3, rounds)))
            hits += low <= true_median <= high
        assert hits / 2000 >= 0.95
    assert median_interval([1.0, 2.0, 3.0]) == (1.0, 3.0)  # too few rounds: the whole range
    assert median_interval([float(v) for v in range(1, 16)]) == (4.0, 12.0)


def test_max_rounds_below_rounds_is_refused() -> None:
    with pytest.raises(ValueError, match="max_rounds"):
        MeasureConfig(rounds=10, max_rounds=5)


def test_isolation_returns_the_same_figures_from_a_pinned_process(tiny_onnx: Path) -> None:
    core = min(os.sched_getaffinity(0))
    here = measure({"tiny": tiny_onnx}, inputs(), TARGET, PROTOCOL)
    isolated = measure({"tiny": tiny_onnx}, inputs(), TARGET,
                       PROTOCOL.model_copy(update={"isolate": True, "cores": [core]}))
    assert set(isolated) == set(here)
    assert isinstance(isolated["tiny"], Latency)
    assert len(isolated["tiny"].round_medians_ms) == PROTOCOL.rounds


def test_a_pinned_process_is_fresh_and_runs_only_on_its_cores() -> None:
    core = max(os.sched_getaffinity(0))
    assert run_pinned(os.sched_getaffinity, {core}, 0) == {core}
    assert run_pinned(os.getpid, {core}) != os.getpid()


def test_measurement_cores_must_exist_and_fit_the_target_threads() -> None:
    available = os.sched_getaffinity(0)
    assert measurement_cores(None, 1) == available
    with pytest.raises(InputError, match="measure.cores.*not available"):
        measurement_cores([max(available) + 1], 1)
    with pytest.raises(InputError, match="target.threads=2"):
        measurement_cores([min(available)], 2)
