"""Constraints a deployable candidate must meet: a floor of the task metric, a latency and a size
budget.

The floor is ``max_accuracy_drop`` below the FP32 reference's validation score of the task
metric (``task.metric``): of its accuracy by default, of its macro-F1 or a class's recall if the
task names one.

They go to Optuna through its trial constraint API (``trial.set_constraint``; a trial is feasible
when every value is ≤ 0), which every sampler edgetune offers reads: TPE and NSGA-II rank
infeasible trials below feasible ones, GP models each constraint, and ``study.best_trials`` (the
front) keeps only feasible trials. Every complete trial sets the same keys in the same order, as
the GP sampler requires.

Values are comparable across keys, since TPE adds up the violations of an infeasible trial: the
shortfall of the metric is a fraction already (0.01 = 1 point); latency and size overruns are taken
relative to their budget (0.1 = 10 % over).
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState
from pydantic import Field

from edgetune.spaces.base import Strict

ACCURACY = "accuracy_drop"
LATENCY = "latency_ms"
SIZE = "size_mb"


class Constraints(Strict):
    """The ``search.constraints`` section; a constraint left out is not applied."""

    max_accuracy_drop: float | None = Field(
        default=None, ge=0, le=1,
        description="the task metric on validation below the FP32 reference's (0.01 = 1 point)",
    )
    max_latency_ms: float | None = Field(
        default=None, gt=0, description="drift-corrected latency budget, milliseconds"
    )
    max_size_mb: float | None = Field(default=None, gt=0, description="ONNX file size budget, MB")

    def floor(self, reference_accuracy: float | None) -> float | None:
        """The lowest validation score of the task metric a feasible candidate may have, if there
        is a floor (and a reference score to take it from)."""
        if self.max_accuracy_drop is None or reference_accuracy is None:
            return None
        return reference_accuracy - self.max_accuracy_drop

    def describe(self, floor: float | None, metric: str = "accuracy") -> str:
        """The constraints in a few words, such as ``≤ 8 ms, ≥ 96.01% accuracy`` (``metric``:
        the task metric's name)."""
        parts = [f"≤ {self.max_latency_ms:g} ms" if self.max_latency_ms is not None else "",
                 f"≥ {floor:.2%} {metric}" if floor is not None else "",
                 f"≤ {self.max_size_mb:g} MB" if self.max_size_mb is not None else ""]
        return ", ".join(part for part in parts if part)

    def violations(self, accuracy: float, latency_ms: float, size_mb: float,
                   floor: float | None) -> dict[str, float]:
        """Each configured constraint's value for a measured candidate (≤ 0 is met); ``floor``
        is ``self.floor(reference accuracy)``."""
        values: dict[str, float] = {}
        if floor is not None:
            values[ACCURACY] = floor - accuracy
        if self.max_latency_ms is not None:
            values[LATENCY] = (latency_ms - self.max_latency_ms) / self.max_latency_ms
        if self.max_size_mb is not None:
            values[SIZE] = (size_mb - self.max_size_mb) / self.max_size_mb
        return values


def set_constraints(trial: optuna.Trial, values: dict[str, float]) -> None:
    for key, value in values.items():
        trial.set_constraint(key, value)


def is_feasible(trial: FrozenTrial) -> bool:
    return all(value <= 0 for value in trial.constraints.values())


def infeasible_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials that missed a constraint: measured, but kept off the front."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if not is_feasible(t)]
