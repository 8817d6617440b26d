"""The Pareto front of a study: which trials no other trial beats on both accuracy and latency.

Latencies from different machines are never compared (DESIGN §4): trials are grouped by where
they were measured (``machine_key``: CPU, cores, threads, ONNX Runtime) and each group has its
own front. A study measured on one machine, the usual case, has one front, Optuna's own.

After ``edgetune confirm`` the study also has a confirmed front: the front's candidates measured
again together, with test accuracy (see ``edgetune.search.confirm``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from edgetune.objectives.machine import machine_key
from edgetune.search.study import REFERENCE, ROLE

CONFIRMED = "confirmed"  # trial user attr: figures of the last confirmation
CONFIRMATION = "confirmation"  # study user attr: when, how, and which trials
UNKNOWN_MACHINE = "unknown machine"


@dataclass(frozen=True)
class FrontRow:
    trial: int
    recipe: str
    accuracy: float
    latency_ms: float
    ratio: float  # latency relative to the FP32 reference measured beside it
    size_mb: float
    machine: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class ConfirmedRow:
    """A trial measured again by ``edgetune confirm``: its confirmed figures and front status."""

    trial: int
    recipe: str
    accuracy: float  # validation: what the search and the confirmed front see
    test_accuracy: float | None  # the confirmed front's only: reported, never used to choose
    latency_ms: float
    ratio: float
    spread: float  # of the confirmed ratio over rounds
    search_latency_ms: float  # what the trial measured
    on_front: bool
    moved_off_front: bool

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def non_dominated(points: Sequence[tuple[float, float]], slack: float = 0.0) -> list[bool]:
    """Which (accuracy, latency) points no other point beats: as accurate and as fast, and better
    in one. With ``slack`` a point counts as ``slack`` faster than measured (a fraction): the
    points that could be on the front if their latency were off by that much.

    Optuna's own Pareto helpers are private; this is the textbook definition, quadratic in the
    number of points, which is a few hundred trials at most.

    Example:
        >>> non_dominated([(0.9, 10.0), (0.8, 5.0), (0.8, 6.0)])
        [True, True, False]
        >>> non_dominated([(0.9, 10.0), (0.8, 5.0), (0.8, 6.0)], slack=0.25)
        [True, True, True]
    """
    kept = []
    for accuracy, latency in points:
        latency /= 1 + slack
        kept.append(not any(
            a >= accuracy and t <= latency and (a > accuracy or t < latency) for a, t in points
        ))
    return kept


def trial_machine(trial: FrozenTrial) -> str:
    record = trial.user_attrs.get("machine")
    return machine_key(record) if record else UNKNOWN_MACHINE


def by_machine(trials: Sequence[FrozenTrial]) -> dict[str, list[FrozenTrial]]:
    """Trials grouped by where they were measured, in trial order."""
    groups: dict[str, list[FrozenTrial]] = {}
    for trial in trials:
        groups.setdefault(trial_machine(trial), []).append(trial)
    return groups


def complete_trials(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def front_trials(trials: Sequence[FrozenTrial], slack: float = 0.0) -> list[FrozenTrial]:
    """The trials on their machine's front (with ``slack``: near enough to it, see above)."""
    kept = []
    for group in by_machine(trials).values():
        flags = non_dominated([(t.values[0], t.values[1]) for t in group], slack)
        kept += [t for t, on_front in zip(group, flags) if on_front]
    return sorted(kept, key=lambda t: t.number)


def front(study: optuna.Study) -> list[FrontRow]:
    """The Pareto-optimal complete trials of each machine, fastest first."""
    rows = [_row(trial) for trial in front_trials(complete_trials(study))]
    return sorted(rows, key=lambda row: (row.machine, row.latency_ms, -row.accuracy))


def machines(rows: Sequence[FrontRow]) -> list[str]:
    return sorted({row.machine for row in rows})


def reference(study: optuna.Study) -> FrozenTrial | None:
    """The FP32 reference trial (trial 0 unless it had to be retried), once complete."""
    for trial in complete_trials(study):
        if trial.user_attrs.get(ROLE) == REFERENCE:
            return trial
    return None


def confirmation(study: optuna.Study) -> dict[str, Any] | None:
    """The last confirmation's record (date, rounds, machine, trials), if any."""
    return study.user_attrs.get(CONFIRMATION)


def confirmed_rows(study: optuna.Study) -> list[ConfirmedRow]:
    """Every trial the last confirmation measured, confirmed front first, fastest first."""
    record = confirmation(study)
    if record is None:
        return []
    numbers = set(record["trials"])
    rows = [
        _confirmed_row(trial) for trial in complete_trials(study)
        if trial.number in numbers and trial.user_attrs.get(CONFIRMED)
    ]
    return sorted(rows, key=lambda row: (not row.on_front, row.latency_ms))


def _row(trial: FrozenTrial) -> FrontRow:
    measurement = trial.user_attrs.get("measurement", {})
    accuracy, latency_ms = trial.values
    return FrontRow(
        trial=trial.number,
        recipe=trial.user_attrs.get("recipe_short", ""),
        accuracy=accuracy,
        latency_ms=latency_ms,
        ratio=measurement.get("ratio", float("nan")),
        size_mb=measurement.get("size_mb", float("nan")),
        machine=trial_machine(trial),
    )


def _confirmed_row(trial: FrozenTrial) -> ConfirmedRow:
    figures = trial.user_attrs[CONFIRMED]
    return ConfirmedRow(
        trial=trial.number,
        recipe=trial.user_attrs.get("recipe_short", ""),
        accuracy=trial.values[0],
        test_accuracy=figures.get("test_accuracy"),
        latency_ms=figures["latency_ms"],
        ratio=figures["ratio"],
        spread=figures.get("ratio_spread", figures["latency"]["spread"]),
        search_latency_ms=trial.values[1],
        on_front=figures["on_front"],
        moved_off_front=figures["moved_off_front"],
    )


def describe_row(row: FrontRow) -> str:
    return (f"#{row.trial} {row.recipe}: accuracy {row.accuracy:.2%}, "
            f"{row.latency_ms:.2f} ms ({row.ratio:.2f}x FP32)")
