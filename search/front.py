"""The Pareto front of a study: feasible trials that no other feasible trial beats on every
objective.

The objectives are accuracy and latency, and model size when the study adds it as a third.
``study.best_trials`` is Optuna's front; once any trial carries constraints it keeps only trials
that meet them all (see ``edgetune.search.constraints``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from edgetune.objectives.machine import machine_key
from edgetune.search.study import REFERENCE, ROLE


@dataclass(frozen=True)
class FrontRow:
    trial: int
    recipe: str
    accuracy: float
    latency_ms: float
    ratio: float  # latency relative to the FP32 reference measured beside it
    size_mb: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def front(study: optuna.Study) -> list[FrontRow]:
    """The Pareto-optimal feasible complete trials, fastest first."""
    rows = [_row(trial) for trial in study.best_trials]
    return sorted(rows, key=lambda row: (row.latency_ms, -row.accuracy))


def reference(study: optuna.Study) -> FrozenTrial | None:
    """The FP32 reference trial (trial 0 unless it had to be retried), once complete."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if trial.user_attrs.get(ROLE) == REFERENCE:
            return trial
    return None


def _row(trial: FrozenTrial) -> FrontRow:
    measurement = trial.user_attrs.get("measurement", {})
    accuracy, latency_ms = trial.values[:2]  # a third objective, if any, is size_mb
    return FrontRow(
        trial=trial.number,
        recipe=trial.user_attrs.get("recipe_short", ""),
        accuracy=accuracy,
        latency_ms=latency_ms,
        ratio=measurement.get("ratio", float("nan")),
        size_mb=measurement.get("size_mb", float("nan")),
    )


def front_machines(study: optuna.Study) -> list[str]:
    """The kinds of machine the front's latencies were measured on (one, unless workers differ)."""
    return sorted({machine_key(t.user_attrs["machine"]) for t in study.best_trials
                   if "machine" in t.user_attrs})


def describe_row(row: FrontRow) -> str:
    return (f"#{row.trial} {row.recipe}: accuracy {row.accuracy:.2%}, "
            f"{row.latency_ms:.2f} ms ({row.ratio:.2f}x FP32)")
