"""Choosing the trial to ship: the sweet spot of the (confirmed) front under the user's limits.

``edgetune export --pick fastest --max-accuracy-drop 0.01`` takes the fastest front trial whose
validation score of the task metric (accuracy unless ``task.metric`` names another) is at most
one point below the FP32 reference's; ``--device NAME`` picks on
the front that device's agent measured. Where ``edgetune confirm``
re-measured trials (trial attr ``confirmed``), the front is the confirmed one, with confirmed
latencies (``edgetune.search.front``), as status and the report show it. The metric is always
the validation figure the search saw: the test figure is reported, never used to choose. Limits not
given default to the config's ``search.constraints`` (which the front already meets: infeasible
trials are kept off it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import optuna

from edgetune.errors import InputError
from edgetune.search.constraints import Constraints
from edgetune.search.front import front_of, reference
from edgetune.search.record import FrontRow
from edgetune.search.study import metric_name

Rule = Literal["fastest", "most-accurate"]


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


def pick(study: optuna.Study, rule: Rule, constraints: Constraints,
         device: str | None = None) -> Choice:
    """The front trial ``rule`` prefers among those within ``constraints``, and why; with
    ``device``, on the front of that device's figures.

    Raises:
        InputError: the study has no front yet, the reference accuracy a drop is measured from
            is missing, or no front trial is within the constraints.
    """
    options = front_options(study, device)
    if not options:
        where = f" measured on device {device!r}" if device is not None else ""
        raise InputError("--device" if device is not None else "--pick",
                         f"study {study.study_name!r} has no complete trials{where} yet")
    fp32 = reference(study, device)
    metric = metric_name(study)
    if constraints.max_accuracy_drop is not None and fp32 is None:
        raise InputError("--max-accuracy-drop", "the FP32 reference trial has not completed, so "
                                                f"there is no {metric} to measure a drop from")
    floor = None if fp32 is None else constraints.floor(fp32.accuracy)
    within, excluded = [], []
    for option in options:
        problem = _breach(option, floor, constraints, metric)
        if problem:
            excluded.append(f"#{option.trial} {problem}")
        else:
            within.append(option)
    conditions = constraints.describe(floor, metric)
    if floor is not None:
        conditions += f" (FP32 reference {fp32.accuracy:.2%} - {constraints.max_accuracy_drop:g})"
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
        f"qualify): validation {metric} {best.accuracy:.2%}, {best.latency_ms:.2f} ms "
        f"({best.ratio:.2f}x FP32{', confirmed' if best.confirmed else ''}), "
        f"{best.size_mb:.1f} MB"
    )
    if excluded:
        reason += ". Left out: " + "; ".join(excluded)
    return Choice(best.trial, reason)


def front_options(study: optuna.Study, device: str | None = None) -> list[FrontRow]:
    """The front trials (the confirmed front where there is one), in trial order, with the
    figures they show (``device``'s, if given)."""
    return [record.row() for record in front_of(study, device)]


def _breach(option: FrontRow, floor: float | None, constraints: Constraints,
            metric: str) -> str | None:
    # The floor is a difference of floats: a trial exactly at it must not fall out by rounding.
    if floor is not None and option.accuracy < floor - 1e-9:
        return f"{metric} {option.accuracy:.2%} < {floor:.2%}"
    if constraints.max_latency_ms is not None and option.latency_ms > constraints.max_latency_ms:
        return f"{option.latency_ms:.2f} ms > {constraints.max_latency_ms:g} ms"
    if constraints.max_size_mb is not None and option.size_mb > constraints.max_size_mb:
        return f"{option.size_mb:.1f} MB > {constraints.max_size_mb:g} MB"
    return None
