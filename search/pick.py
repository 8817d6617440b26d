"""Choosing the trial to ship: the sweet spot of the (confirmed) front under the user's limits.

``edgetune export --pick fastest --max-accuracy-drop 0.01`` takes the fastest front trial whose
validation accuracy is at most one point below the FP32 reference's. Where ``edgetune confirm``
re-measured a front trial (trial attr ``confirmed``), its confirmed latency is used and a trial
the confirmation moved off the front is left out, as the report does. Accuracy is always the
validation figure the search saw: test accuracy is reported, never used to choose. Limits not
given default to the config's ``search.constraints`` (which the front already meets: Optuna keeps
infeasible trials off it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import optuna
from optuna.trial import FrozenTrial

from edgetune.errors import InputError
from edgetune.search.constraints import Constraints
from edgetune.search.front import reference

Rule = Literal["fastest", "most-accurate"]
CONFIRMED = "confirmed"


@dataclass(frozen=True)
class Option:
    trial: int
    recipe: str
    accuracy: float  # validation
    latency_ms: float
    ratio: float
    size_mb: float
    confirmed: bool


@dataclass(frozen=True)
class Choice:
    trial: int
    reason: str


def limits(stored: Constraints, max_accuracy_drop: float | None,
           max_latency_ms: float | None) -> Constraints:
    """The study's constraints, with the limits given on the command line instead."""
    given = {"max_accuracy_drop": max_accuracy_drop, "max_latency_ms": max_latency_ms}
    return stored.model_copy(update={name: value for name, value in given.items()
                                     if value is not None})


def pick(study: optuna.Study, rule: Rule, constraints: Constraints) -> Choice:
    """The front trial ``rule`` prefers among those within ``constraints``, and why.

    Raises:
        InputError: the study has no front yet, the reference accuracy a drop is measured from
            is missing, or no front trial is within the constraints.
    """
    options = front_options(study)
    if not options:
        raise InputError("--pick", f"study {study.study_name!r} has no complete trials yet")
    fp32 = reference(study)
    if constraints.max_accuracy_drop is not None and fp32 is None:
        raise InputError("--max-accuracy-drop", "the FP32 reference trial has not completed, so "
                                                "there is no accuracy to measure a drop from")
    floor = None if fp32 is None else constraints.floor(fp32.values[0])
    within, excluded = [], []
    for option in options:
        problem = _breach(option, floor, constraints)
        if problem:
            excluded.append(f"#{option.trial} {problem}")
        else:
            within.append(option)
    conditions = constraints.describe(floor)
    if floor is not None:
        conditions += f" (FP32 reference {fp32.values[0]:.2%} - {constraints.max_accuracy_drop:g})"
    if not within:
        raise InputError("--pick", f"none of the {len(options)} front trials meets {conditions}: "
                                   + "; ".join(excluded))
    if rule == "fastest":
        best = min(within, key=lambda o: (o.latency_ms, -o.accuracy))
    else:
        best = max(within, key=lambda o: (o.accuracy, -o.latency_ms))
    reason = (
        f"trial {best.trial} ({best.recipe}): "
        f"{'the fastest' if rule == 'fastest' else 'the most accurate'} front trial"
        f"{f' within {conditions}' if conditions else ''} ({len(within)} of {len(options)} "
        f"qualify): validation accuracy {best.accuracy:.2%}, {best.latency_ms:.2f} ms "
        f"({best.ratio:.2f}x FP32{', confirmed' if best.confirmed else ''}), "
        f"{best.size_mb:.1f} MB"
    )
    if excluded:
        reason += ". Left out: " + "; ".join(excluded)
    return Choice(best.trial, reason)


def front_options(study: optuna.Study) -> list[Option]:
    """The search's front, with confirmed latencies where measured, less the trials the
    confirmation moved off it."""
    options = [_option(trial) for trial in study.best_trials
               if (trial.user_attrs.get(CONFIRMED) or {}).get("on_front", True)]
    return sorted(options, key=lambda o: o.trial)


def _option(trial: FrozenTrial) -> Option:
    accuracy, latency_ms = trial.values[:2]  # a third objective, if any, is size_mb
    measurement = trial.user_attrs.get("measurement", {})
    confirmed = trial.user_attrs.get(CONFIRMED) or {}
    return Option(
        trial=trial.number,
        recipe=trial.user_attrs.get("recipe_short", ""),
        accuracy=accuracy,
        latency_ms=float(confirmed.get("latency_ms", latency_ms)),
        ratio=float(confirmed.get("ratio", measurement.get("ratio", float("nan")))),
        size_mb=float(measurement.get("size_mb", float("nan"))),
        confirmed=bool(confirmed),
    )


def _breach(option: Option, floor: float | None, constraints: Constraints) -> str | None:
    # The floor is a difference of floats: a trial exactly at it must not fall out by rounding.
    if floor is not None and option.accuracy < floor - 1e-9:
        return f"accuracy {option.accuracy:.2%} < {floor:.2%}"
    if constraints.max_latency_ms is not None and option.latency_ms > constraints.max_latency_ms:
        return f"{option.latency_ms:.2f} ms > {constraints.max_latency_ms:g} ms"
    if constraints.max_size_mb is not None and option.size_mb > constraints.max_size_mb:
        return f"{option.size_mb:.1f} MB > {constraints.max_size_mb:g} MB"
    return None
