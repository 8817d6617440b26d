"""Latency under ONNX Runtime, measured so that figures survive a noisy, shared machine.

The protocol (DESIGN §4): sessions with the target's settings; real inputs from the validation
split; warm-up; then ``rounds`` rounds in which every model runs ``runs`` times in turn
(interleaved, the order alternating between rounds so neither model always runs first). A model's
figure is the median of its round medians; p90 and the spread of the round medians are kept.
Absolute milliseconds drift with the machine's load; the ratio of two models measured together
does not, which is why every trial measures the FP32 reference beside its candidate.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from pydantic import Field

from edgetune.objectives.isolation import available_cores, run_pinned
from edgetune.objectives.runtime import TargetConfig, feeds, session
from edgetune.spaces.base import Strict


class MeasureConfig(Strict):
    """The ``measure:`` section: how many runs make one latency figure."""

    warmup: int = Field(default=10, ge=0)
    rounds: int = Field(default=5, ge=1)
    runs: int = Field(default=30, ge=1)
    inputs: int = Field(default=8, ge=1, description="distinct validation batches cycled through")
    isolate: bool = Field(default=False, description="measure in a fresh process pinned to cores")
    cores: list[int] | None = Field(
        default=None, min_length=1,
        description="CPU ids a measurement is pinned to (with isolate; training keeps off them)",
    )


@dataclass(frozen=True)
class Latency:
    median_ms: float
    p90_ms: float
    spread: float  # (max - min) of the round medians, relative to their median
    round_medians_ms: list[float]
    round_means_ms: list[float]

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Ratio:
    """A model's latency relative to another's measured beside it, round by round."""

    value: float  # the median of the per-round ratios of round medians
    spread: float  # (max - min) of the per-round ratios, relative to their median


def ratio(latency: Latency, reference: Latency) -> Ratio:
    """``latency`` relative to ``reference``, both from one ``measure`` call.

    Rounds are paired: in each round both models ran back to back under the same load, so each
    round's ratio cancels the load of its moment, and the median over rounds drops outliers.
    """
    per_round = [a / b for a, b in zip(latency.round_medians_ms, reference.round_medians_ms,
                                       strict=True)]
    return Ratio(value=float(np.median(per_round)), spread=_spread(per_round))


def latency_inputs(encoded: dict[str, np.ndarray], target: TargetConfig,
                   count: int) -> list[dict[str, np.ndarray]]:
    """``count`` batches of ``target.batch_size`` real rows cut to ``target.sequence_length``."""
    rows = len(next(iter(encoded.values())))
    batches = []
    for i in range(count):
        index = np.arange(i * target.batch_size, (i + 1) * target.batch_size) % rows
        batches.append({
            name: _fit(value[index], target.sequence_length) for name, value in encoded.items()
        })
    return batches


def _fit(value: np.ndarray, length: int) -> np.ndarray:
    if value.shape[1] >= length:
        return np.ascontiguousarray(value[:, :length])
    return np.pad(value, ((0, 0), (0, length - value.shape[1])))


def measure(models: dict[str, Path], inputs: list[dict[str, np.ndarray]],
            target: TargetConfig, config: MeasureConfig) -> dict[str, Latency]:
    """Measure ``models`` together, interleaved, and return each one's latency.

    With ``config.isolate`` the measurement runs in a fresh process pinned to ``config.cores``
    (checked by ``isolation.measurement_cores`` where the command starts: while it trains, this
    process itself keeps off them) or, without cores, to all of this process's.
    """
    if config.isolate:
        cores = set(config.cores) if config.cores is not None else available_cores()
        return run_pinned(_measure_here, cores, models, inputs, target, config)
    return _measure_here(models, inputs, target, config)


def _measure_here(models: dict[str, Path], inputs: list[dict[str, np.ndarray]],
                  target: TargetConfig, config: MeasureConfig) -> dict[str, Latency]:
    runners = {}
    for name, path in models.items():
        sess = session(path, target)
        runners[name] = (sess, [feeds(sess, batch, slice(None)) for batch in inputs])
        for i in range(config.warmup):
            sess.run(None, runners[name][1][i % len(inputs)])
    times: dict[str, list[list[float]]] = {name: [] for name in models}
    order = list(models)
    for round_index in range(config.rounds):
        for name in order if round_index % 2 == 0 else reversed(order):
            sess, batches = runners[name]
            samples = []
            for i in range(config.runs):
                batch = batches[i % len(batches)]
                start = time.perf_counter()
                sess.run(None, batch)
                samples.append((time.perf_counter() - start) * 1000)
            times[name].append(samples)
    return {name: _summarise(rounds) for name, rounds in times.items()}


def _summarise(rounds: list[list[float]]) -> Latency:
    medians = [float(np.median(r)) for r in rounds]
    return Latency(
        median_ms=float(np.median(medians)),
        p90_ms=float(np.percentile(np.concatenate(rounds), 90)),
        spread=_spread(medians),
        round_medians_ms=medians,
        round_means_ms=[float(np.mean(r)) for r in rounds],
    )


def _spread(values: list[float]) -> float:
    return (max(values) - min(values)) / float(np.median(values))
