"""The Pareto front of a study: feasible trials that no other feasible trial of the same machine
beats on every objective.

- **Objectives**: accuracy and latency, and model size when the study adds it as a third; the
  directions are the study's own. Non-domination is Optuna's (the helper behind
  ``study.best_trials``).
- **Feasibility**: a trial that missed a constraint (``edgetune.search.constraints``) is never on
  the front, as in ``study.best_trials``.
- **Machines**: latencies from different machines are never compared (DESIGN §4): trials are
  grouped by where they were measured (``machine_key``: CPU, cores, threads, ONNX Runtime) and
  each group has its own front. A study measured on one machine, the usual case, has one front,
  the same trials as ``study.best_trials``.
- **Confirmation**: after ``edgetune confirm`` (``edgetune.search.confirm``) a confirmed trial's
  figures replace its search figures: its confirmed latency, the constraints checked against it,
  and the machine of the confirmation. ``front`` (what ``status``, ``report`` and ``export``
  show) is then the confirmed front, with test accuracy; ``search_front`` stays the search's own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from edgetune.objectives.machine import machine_key
from edgetune.search.constraints import is_feasible
from edgetune.search.study import DIRECTIONS, REFERENCE, ROLE

CONFIRMED = "confirmed"  # trial user attr: figures of the last confirmation
CONFIRMATION = "confirmation"  # study user attr: when, how, and which trials
UNKNOWN_MACHINE = "unknown machine"
LATENCY = 1  # the objective index of latency_ms: the one confirmation re-measures

Direction = str | StudyDirection


@dataclass(frozen=True)
class FrontRow:
    trial: int
    recipe: str
    accuracy: float  # validation: what the search and the front see
    latency_ms: float  # confirmed where the trial was confirmed, else the search's
    ratio: float  # latency relative to the FP32 reference measured beside it
    size_mb: float
    machine: str
    confirmed: bool
    test_accuracy: float | None  # the confirmed front's only: reported, never used to choose

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


def non_dominated(points: Sequence[Sequence[float]],
                  directions: Sequence[Direction] = DIRECTIONS,
                  slack: float = 0.0) -> list[bool]:
    """Which points (objective values, in ``directions``) no other point beats: as good on every
    objective and better on one. Equal points both stay.

    With ``slack`` a point counts as ``slack`` faster than measured (a fraction of its latency,
    objective 1): the points that could be on the front were their latency off by that much.

    Example:
        >>> non_dominated([(0.9, 10.0), (0.8, 5.0), (0.8, 6.0)])
        [True, True, False]
        >>> non_dominated([(0.9, 10.0), (0.8, 5.0), (0.8, 6.0)], slack=0.25)
        [True, True, True]
        >>> non_dominated([(0.9, 10.0, 5.0), (0.9, 10.0, 4.0)],
        ...               ("maximize", "minimize", "minimize"))
        [False, True]
    """
    if not points:
        return []
    signs = np.array([1.0 if _minimize(d) else -1.0 for d in directions[:len(points[0])]])
    loss = np.asarray(points, dtype=float) * signs
    if not slack:
        return [bool(flag) for flag in _not_dominated(loss)]
    kept = []
    for i in range(len(loss)):
        shifted = loss.copy()
        shifted[i, LATENCY] /= 1 + slack
        kept.append(bool(_not_dominated(shifted)[i]))
    return kept


def _not_dominated(loss: np.ndarray) -> np.ndarray:
    """Which rows of ``loss`` (minimized in every column) no other row dominates; equal rows
    both stay. Quadratic, which is instant for a study's trials, and keeps off Optuna's private
    ``_is_pareto_front``."""
    no_worse = (loss[:, None, :] <= loss[None, :, :]).all(axis=2)  # [j, i]: j <= i everywhere
    better = (loss[:, None, :] < loss[None, :, :]).any(axis=2)
    return ~(no_worse & better).any(axis=0)


def trial_machine(trial: FrozenTrial, figures: dict[str, Any] | None = None) -> str:
    """Where the trial's latency was measured: the confirmation's machine when ``figures`` (its
    confirmed figures) are given."""
    record = (figures or {}).get("machine") or trial.user_attrs.get("machine")
    return machine_key(record) if record else UNKNOWN_MACHINE


def shown_values(trial: FrozenTrial, figures: dict[str, Any] | None = None) -> list[float]:
    """The trial's objective values, with the confirmed latency of ``figures`` if given."""
    values = list(trial.values)
    if figures:
        values[LATENCY] = float(figures["latency_ms"])
    return values


def feasible(trial: FrozenTrial, figures: dict[str, Any] | None = None) -> bool:
    """Whether the trial meets every constraint; checked against the confirmed latency when
    ``figures`` are given."""
    values = (figures or {}).get("constraints")
    if values is None:
        return is_feasible(trial)
    return all(value <= 0 for value in values.values())


def confirmed_figures(trial: FrozenTrial) -> dict[str, Any] | None:
    return trial.user_attrs.get(CONFIRMED) or None


def complete_trials(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def front_trials(trials: Sequence[FrozenTrial], directions: Sequence[Direction] = DIRECTIONS,
                 slack: float = 0.0,
                 confirmations: Mapping[int, dict[str, Any]] | None = None) -> list[FrozenTrial]:
    """The feasible trials on their machine's front, in trial order.

    A trial's confirmed figures, where it has them, replace its search figures; ``confirmations``
    (trial number -> confirmed figures) gives them instead of the trials' user attrs (``{}``: the
    search's own figures). With ``slack``: the trials near enough to the front (``non_dominated``).
    """
    groups: dict[str, list[tuple[FrozenTrial, dict[str, Any] | None]]] = {}
    for trial in trials:
        figures = (confirmed_figures(trial) if confirmations is None
                   else confirmations.get(trial.number))
        if trial.state == TrialState.COMPLETE and feasible(trial, figures):
            groups.setdefault(trial_machine(trial, figures), []).append((trial, figures))
    kept = []
    for group in groups.values():
        flags = non_dominated([shown_values(t, f) for t, f in group], directions, slack)
        kept += [t for (t, _), on_front in zip(group, flags) if on_front]
    return sorted(kept, key=lambda t: t.number)


def front_of(study: optuna.Study) -> list[FrozenTrial]:
    """The trials on the study's front: the confirmed front where there is one."""
    return front_trials(complete_trials(study), study.directions)


def search_front(study: optuna.Study) -> list[FrozenTrial]:
    """The trials on the front of the search's own figures (before any confirmation)."""
    return front_trials(complete_trials(study), study.directions, confirmations={})


def front(study: optuna.Study) -> list[FrontRow]:
    """The front of each machine (confirmed figures where measured), fastest first."""
    rows = [_row(trial) for trial in front_of(study)]
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
    confirmed = confirmed_figures(trial) or {}
    # a third objective, if any, is size_mb
    accuracy, latency_ms = shown_values(trial, confirmed)[:2]
    return FrontRow(
        trial=trial.number,
        recipe=trial.user_attrs.get("recipe_short", ""),
        accuracy=accuracy,
        latency_ms=latency_ms,
        ratio=confirmed.get("ratio", measurement.get("ratio", float("nan"))),
        size_mb=measurement.get("size_mb", float("nan")),
        machine=trial_machine(trial, confirmed),
        confirmed=bool(confirmed),
        test_accuracy=confirmed.get("test_accuracy"),
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
        search_latency_ms=trial.values[LATENCY],
        on_front=figures["on_front"],
        moved_off_front=figures["moved_off_front"],
    )


def _minimize(direction: Direction) -> bool:
    if isinstance(direction, StudyDirection):
        return direction == StudyDirection.MINIMIZE
    return direction == "minimize"
