"""Latency in the target's runtime, measured so that figures survive a noisy, shared machine.

The protocol (docs/measurement.md): sessions with the target's settings; real inputs from the
validation split; warm-up; then rounds in which every model runs ``runs`` times in turn
(interleaved, the order alternating between rounds so neither model always runs first). A
model's figure is the median of its round medians; p90 and the spread of the round medians are
kept. Absolute milliseconds drift with the machine's load; the ratio of two models measured
together does not, which is why every trial measures the FP32 reference beside its candidate.

Rounds are short (a few runs each) so that the two runs a ratio pairs share the machine's state:
on a shared host the speed changes from second to second. Measured with a ``reference``, the
protocol is sequential: after ``rounds`` rounds it stops once every model's ratio to the
reference is known to within ``precision`` (a 95% confidence interval of the median of the
per-round ratios), else it adds rounds up to ``max_rounds``. A quiet machine pays for the minimum;
a loaded one gets the rounds its noise needs (``benchmarks/RESULTS.md``, measurement).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from pydantic import Field, model_validator

from edgetune.objectives.isolation import available_cores, run_pinned
from edgetune.objectives.runtimes import runtime_of
from edgetune.objectives.target import TargetConfig
from edgetune.spaces.base import Strict


class RoundLimits(Strict):
    """A sequential protocol's least and most rounds: more than ``rounds`` are measured only
    while a ratio is less precise than ``MeasureConfig.precision``."""

    # 40 to 80, for a trial as for the confirmation: over 5 separate processes the trial's ratio
    # spread 3.0% quiet and 3.4% beside a CPU-heavy process, against 3.3% and 16.9% with 15 to
    # 30 rounds, whose few seconds cannot average out the load's phases (benchmarks/RESULTS.md,
    # measurement, run 7). It costs about 2 s a trial on a quiet machine.
    rounds: int = Field(default=40, ge=1, description="rounds at least")
    max_rounds: int = Field(default=80, ge=1, description="rounds at most")

    @model_validator(mode="after")
    def _enough_rounds(self) -> RoundLimits:
        if self.max_rounds < self.rounds:
            raise ValueError(f"max_rounds ({self.max_rounds}) must be at least rounds "
                             f"({self.rounds})")
        return self


class MeasureConfig(RoundLimits):
    """The ``measure:`` section: how many runs make one latency figure."""

    warmup: int = Field(default=10, ge=0)
    precision: float = Field(default=0.02, gt=0, description="half-width of the ratio's 95% "
                             "confidence interval, relative to the ratio, that ends a measurement")
    # 5 rather than 10: a round's two models then run closer together in time, and in the same
    # time there are twice the rounds to pair (benchmarks/RESULTS.md, run 6: rounds of 3 and 5
    # runs held the ratio as well as rounds of 10 across processes).
    runs: int = Field(default=5, ge=1, description="runs of each model in a round")
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
    interval: tuple[float, float]  # 95% confidence interval of the median

    @property
    def half_width(self) -> float:
        """Half the interval's width relative to the ratio: what ``precision`` bounds."""
        low, high = self.interval
        return (high - low) / 2 / self.value


def ratio(latency: Latency, reference: Latency) -> Ratio:
    """``latency`` relative to ``reference``, both from one ``measure`` call.

    Rounds are paired: in each round both models ran back to back under the same load, so each
    round's ratio cancels the load of its moment, and the median over rounds drops outliers.
    """
    per_round = [a / b for a, b in zip(latency.round_medians_ms, reference.round_medians_ms,
                                       strict=True)]
    return Ratio(value=float(np.median(per_round)), spread=_spread(per_round),
                 interval=median_interval(per_round))


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """A distribution-free confidence interval of the median of ``values``.

    The order statistics x(k) and x(n+1-k), for the largest k with P(Binomial(n, 1/2) < k) at
    most (1 - confidence) / 2: the median lies between them at least that often, whatever the
    distribution (per-round ratios are skewed by load, so a normal interval would not hold). With
    too few values for such a k, the whole range.
    """
    ordered = sorted(values)
    n = len(ordered)
    tail, below, k = (1 - confidence) / 2, 0.0, 0
    while k < n // 2 and below + math.comb(n, k) / 2**n <= tail:
        below += math.comb(n, k) / 2**n
        k += 1
    low = max(k, 1)
    return ordered[low - 1], ordered[n - low]


def latency_inputs(encoded: dict[str, np.ndarray], target: TargetConfig,
                   count: int) -> list[dict[str, np.ndarray]]:
    """``count`` batches of ``target.batch_size`` real rows, token ids cut to
    ``target.sequence_length`` (images keep the size their task made them)."""
    rows = len(next(iter(encoded.values())))
    batches = []
    for i in range(count):
        index = np.arange(i * target.batch_size, (i + 1) * target.batch_size) % rows
        batches.append({
            name: _fit(value[index], target.sequence_length) if value.ndim == 2 else value[index]
            for name, value in encoded.items()
        })
    return batches


def _fit(value: np.ndarray, length: int) -> np.ndarray:
    if value.shape[1] >= length:
        return np.ascontiguousarray(value[:, :length])
    return np.pad(value, ((0, 0), (0, length - value.shape[1])))


def measure(models: dict[str, Path], inputs: list[dict[str, np.ndarray]],
            target: TargetConfig, config: MeasureConfig, reference: str | None = None,
            own_inputs: dict[str, list[dict[str, np.ndarray]]] | None = None,
            ) -> dict[str, Latency]:
    """Measure ``models`` together, interleaved, and return each one's latency.

    Each runs on ``inputs``, or on its ``own_inputs`` where given: the same texts tokenized for
    a model whose tokenizer differs (a trimmed vocabulary).

    With ``reference`` (one of the names), rounds are added beyond ``config.rounds`` until every
    other model's ratio to it is within ``config.precision`` or ``config.max_rounds`` is reached;
    without, exactly ``config.rounds`` rounds run.

    With ``config.isolate`` the measurement runs in a fresh process pinned to ``config.cores``
    (checked by ``isolation.measurement_cores`` where the command starts: while it trains, this
    process itself keeps off them) or, without cores, to all of this process's.
    """
    if config.isolate:
        cores = set(config.cores) if config.cores is not None else available_cores()
        return run_pinned(_measure_here, cores, models, inputs, target, config, reference,
                          own_inputs)
    return _measure_here(models, inputs, target, config, reference, own_inputs)


def precise_enough(latencies: dict[str, Latency], reference: str, precision: float) -> bool:
    """Whether every model's ratio to ``reference`` has a confidence interval within
    ``precision`` of it (relative half-width)."""
    for name, latency in latencies.items():
        if name == reference:
            continue
        if ratio(latency, latencies[reference]).half_width > precision:
            return False
    return True


def _measure_here(models: dict[str, Path], inputs: list[dict[str, np.ndarray]],
                  target: TargetConfig, config: MeasureConfig,
                  reference: str | None = None,
                  own_inputs: dict[str, list[dict[str, np.ndarray]]] | None = None,
                  ) -> dict[str, Latency]:
    runners = {}
    for name, path in models.items():
        session = runtime_of(path).open(path, target)
        batches = (own_inputs or {}).get(name, inputs)
        runners[name] = (session, [session.bind(batch) for batch in batches])
        for i in range(config.warmup):
            session.run(runners[name][1][i % len(batches)])
    times: dict[str, list[list[float]]] = {name: [] for name in models}
    order = list(models)
    last = config.max_rounds if reference is not None else config.rounds
    for round_index in range(last):
        if (reference is not None and round_index >= config.rounds and precise_enough(
                {name: _summarise(rounds) for name, rounds in times.items()}, reference,
                config.precision)):
            break
        for name in order if round_index % 2 == 0 else reversed(order):
            session, batches = runners[name]
            samples = []
            for i in range(config.runs):
                batch = batches[i % len(batches)]
                start = time.perf_counter()
                session.run(batch)
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
