"""The Pareto front of a study: feasible trials that no other feasible trial of the same machine
beats on every objective.

- **Objectives**: accuracy and latency, and model size when the study adds it as a third; the
  directions are the study's own. Non-domination is Optuna's (the helper behind
  ``study.best_trials``).
- **Feasibility**: a trial that missed a constraint (``edgetune.search.constraints``) is never on
  the front, as in ``study.best_trials``.
- **Machines**: latencies from different machines are never compared (docs/measurement.md):
  trials are grouped by where they were measured (``machine_key``: CPU, cores, threads, runtime) and
  each group has its own front. A study measured on one machine, the usual case, has one front,
  the same trials as ``study.best_trials``.
- **Confirmation**: after ``edgetune confirm`` (``edgetune.search.confirm``) a confirmed trial's
  figures replace its search figures, as its record decides (``edgetune.search.record``).
  ``front`` (what ``status``, ``report`` and ``export`` show) is then the confirmed front, with
  test accuracy; ``search_front`` stays the search's own.
- **Devices**: agents of devices other than the study's ``target.device`` (``edgetune agent``)
  record their figures on the same trials; ``front(study, device=NAME)`` is that device's front.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import TrialState

from edgetune.objectives.machine import machine_key, machine_record
from edgetune.objectives.target import TargetConfig
from edgetune.search.record import (
    Anchor,
    Confirmed,
    FrontRow,
    TrialRecord,
    anchors,
    devices,
    records,
)
from edgetune.search.study import DIRECTIONS

CONFIRMATION = "confirmation"  # study user attr: when, how, and which trials
LATENCY = 1  # the objective index of latency_ms: the one confirmation re-measures

Direction = str | StudyDirection


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
    interval: tuple[float, float] | None  # the 95% confidence interval of the confirmed ratio
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


def complete(study: optuna.Study, device: str | None = None) -> list[TrialRecord]:
    """The complete trials; with ``device``, those that device's agent measured, as it did."""
    return records(study, states=(TrialState.COMPLETE,), device=device)


def front_trials(trials: Sequence[TrialRecord], directions: Sequence[Direction] = DIRECTIONS,
                 slack: float = 0.0,
                 confirmations: Mapping[int, Confirmed] | None = None) -> list[TrialRecord]:
    """The feasible trials on their machine's front, in trial order.

    ``confirmations`` (trial number -> confirmed figures) replaces the confirmations the records
    hold (``{}``: the search's own figures). With ``slack``: the trials near enough to the front
    (``non_dominated``).
    """
    groups: dict[str, list[TrialRecord]] = {}
    for record in trials:
        if confirmations is not None:
            record = record.with_confirmation(confirmations.get(record.number))
        if record.state == TrialState.COMPLETE and record.feasible:
            groups.setdefault(record.machine_key, []).append(record)
    kept = []
    for group in groups.values():
        flags = non_dominated([r.values for r in group], directions, slack)
        kept += [r for r, on_front in zip(group, flags, strict=True) if on_front]
    return sorted(kept, key=lambda r: r.number)


def front_of(study: optuna.Study, device: str | None = None) -> list[TrialRecord]:
    """The trials on the study's front: the confirmed front where there is one; with
    ``device``, the front of that device's figures."""
    return front_trials(complete(study, device), study.directions)


def search_front(study: optuna.Study) -> list[TrialRecord]:
    """The trials on the front of the search's own figures (before any confirmation)."""
    return front_trials(complete(study), study.directions, confirmations={})


def front(study: optuna.Study, device: str | None = None) -> list[FrontRow]:
    """The front of each machine (confirmed figures where measured), fastest first; with
    ``device``, of that device's figures."""
    rows = [record.row() for record in front_of(study, device)]
    return sorted(rows, key=lambda row: (row.machine, row.latency_ms, -row.accuracy))


def other_devices(study: optuna.Study) -> list[str]:
    """The devices whose agents recorded figures beside the study's own: each has a front of
    its own (the ``target.device``, if any, already gives the study's)."""
    objective = ((study.user_attrs.get("config") or {}).get("target") or {}).get("device")
    return [name for name in devices(study.get_trials(deepcopy=False)) if name != objective]


def machines(rows: Sequence[FrontRow]) -> list[str]:
    return sorted({row.machine for row in rows})


def reference(study: optuna.Study, device: str | None = None) -> TrialRecord | None:
    """The FP32 reference trial (trial 0 unless it had to be retried), once complete (on
    ``device``, once measured there)."""
    return next((record for record in complete(study, device) if record.is_reference), None)


def reference_latencies(study: optuna.Study, device: str | None = None) -> dict[str, Anchor]:
    """What milliseconds are anchored on, machine by machine (``record.anchors``)."""
    return anchors(study.get_trials(deepcopy=False), device=device)


def reference_row(study: optuna.Study, device: str | None = None) -> FrontRow | None:
    """The FP32 reference as a row of the front's table: every other row's yardstick, with its
    test accuracy where a confirmation computed it, and a ratio of 1 by definition."""
    fp32 = reference(study, device)
    if fp32 is None:
        return None
    tested = (confirmation(study) or {}).get("reference_test_accuracy")
    return replace(fp32.row(), ratio=1.0, test_accuracy=tested)


def confirmation(study: optuna.Study) -> dict[str, Any] | None:
    """The last confirmation's record (date, rounds, machine, trials), if any."""
    return study.user_attrs.get(CONFIRMATION)


def confirmed_rows(study: optuna.Study) -> list[ConfirmedRow]:
    """Every trial the last confirmation measured, confirmed front first, fastest first."""
    record = confirmation(study)
    if record is None:
        return []
    numbers = set(record["trials"])
    rows = [_confirmed_row(r) for r in complete(study)
            if r.number in numbers and r.confirmed is not None]
    return sorted(rows, key=lambda row: (not row.on_front, row.latency_ms))


def candidates(study: optuna.Study, margin: float) -> list[TrialRecord]:
    """The trials to confirm: each machine's front and the trials within ``margin`` of it, by
    the search's own figures (feasible trials only, on all the study's objectives)."""
    return front_trials(complete(study), study.directions, slack=margin, confirmations={})


def is_current(study: optuna.Study, margin: float | None = None,
               target: TargetConfig | None = None) -> bool:
    """Whether the last confirmation measured the candidates the study has now.

    ``margin`` defaults to the confirmation's own; with ``target``, it must also have been
    measured on this machine with the target's threads and runtime.
    """
    record = study.user_attrs.get(CONFIRMATION)
    if record is None:
        return False
    chosen = [t.number for t in candidates(study, record["margin"] if margin is None else margin)]
    here = target is None or record["machine"] == machine_key(machine_record(target))
    return record["trials"] == chosen and here


def _confirmed_row(record: TrialRecord) -> ConfirmedRow:
    figures = record.confirmed
    assert figures is not None
    return ConfirmedRow(
        trial=record.number,
        recipe=record.recipe_short,
        accuracy=record.accuracy,
        test_accuracy=figures.test_accuracy,
        latency_ms=record.latency_ms,
        ratio=figures.ratio,
        spread=figures.spread,
        interval=figures.ratio_interval,
        search_latency_ms=record.search_latency_ms,
        on_front=figures.on_front,
        moved_off_front=figures.moved_off_front,
    )


def _minimize(direction: Direction) -> bool:
    if isinstance(direction, StudyDirection):
        return direction == StudyDirection.MINIMIZE
    return direction == "minimize"
