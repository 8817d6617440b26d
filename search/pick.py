"""Choosing the trial to ship: the sweet spot of the (confirmed) front under the user's limits.

``edgetune export --pick fastest --max-accuracy-drop 0.01`` takes the fastest front trial whose
validation accuracy is at most one point below the FP32 reference's. Once ``edgetune confirm``
has re-measured the front (trial attr ``confirmed``), its front and latencies are used; accuracy
is always the validation figure the search saw: test accuracy is reported, never used to choose.
Limits default to the config's ``search.constraints`` when it has them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import optuna
from optuna.trial import FrozenTrial, TrialState

from edgetune.errors import InputError
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


@dataclass(frozen=True)
class Limits:
    max_accuracy_drop: float | None = None
    max_latency_ms: float | None = None
    max_size_mb: float | None = None

    @staticmethod
    def of(study: optuna.Study, max_accuracy_drop: float | None,
           max_latency_ms: float | None) -> Limits:
        """The given limits, else the study config's ``search.constraints``."""
        stored = study.user_attrs.get("config", {}).get("search", {}).get("constraints") or {}
        return Limits(
            max_accuracy_drop if max_accuracy_drop is not None
            else stored.get("max_accuracy_drop"),
            max_latency_ms if max_latency_ms is not None else stored.get("max_latency_ms"),
            stored.get("max_size_mb"),
        )


@dataclass(frozen=True)
class Choice:
    trial: int
    reason: str


def pick(study: optuna.Study, rule: Rule, limits: Limits) -> Choice:
    """The front trial ``rule`` prefers among those within ``limits``, and why.

    Raises:
        InputError: the study has no front yet, the reference accuracy a drop is measured from
            is missing, or no front trial is within the limits.
    """
    options, confirmed = front_options(study)
    if not options:
        raise InputError("--pick", f"study {study.study_name!r} has no complete trials yet")
    floor = _accuracy_floor(study, limits.max_accuracy_drop)
    within, excluded = [], []
    for option in options:
        problem = _breach(option, floor, limits)
        (excluded if problem else within).append((option, problem))
    figures = "confirmed" if confirmed else "trial"
    conditions = _conditions(floor, limits, study)
    if not within:
        raise InputError(
            "--pick",
            f"none of the {len(options)} front trials has {conditions}: "
            + "; ".join(f"#{o.trial} {why}" for o, why in excluded),
        )
    if rule == "fastest":
        best = min((o for o, _ in within), key=lambda o: (o.latency_ms, -o.accuracy))
    else:
        best = max((o for o, _ in within), key=lambda o: (o.accuracy, -o.latency_ms))
    superlative = "the fastest" if rule == "fastest" else "the most accurate"
    qualifier = f" with {conditions}" if conditions else ""
    reason = (
        f"trial {best.trial} ({best.recipe}): {superlative} front trial{qualifier} "
        f"({len(within)} of {len(options)} qualify; {figures} figures): validation accuracy "
        f"{best.accuracy:.2%}, {best.latency_ms:.2f} ms ({best.ratio:.2f}x FP32), "
        f"{best.size_mb:.1f} MB"
    )
    if excluded:
        reason += ". Left out: " + "; ".join(f"#{o.trial} {why}" for o, why in excluded)
    return Choice(best.trial, reason)


def front_options(study: optuna.Study) -> tuple[list[Option], bool]:
    """The front with its figures, and whether they are confirmed ones.

    Once any trial is confirmed, the front is the confirmed one (``confirmed.on_front``) and its
    latencies are the confirmed figures; before, it is Optuna's front of the trial values.
    """
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    confirmed = [t for t in complete if CONFIRMED in t.user_attrs]
    if confirmed:
        return [_option(t, t.user_attrs[CONFIRMED]) for t in confirmed
                if t.user_attrs[CONFIRMED].get("on_front")], True
    return [_option(t, t.user_attrs.get("measurement", {})) for t in study.best_trials], False


def _option(trial: FrozenTrial, figures: dict) -> Option:
    accuracy, latency_ms = trial.values
    return Option(
        trial=trial.number,
        recipe=trial.user_attrs.get("recipe_short", ""),
        accuracy=accuracy,
        latency_ms=float(figures.get("latency_ms", latency_ms)),
        ratio=float(figures.get("ratio", float("nan"))),
        size_mb=float(trial.user_attrs.get("measurement", {}).get("size_mb", float("nan"))),
    )


def _accuracy_floor(study: optuna.Study, max_drop: float | None) -> float | None:
    if max_drop is None:
        return None
    fp32 = reference(study)
    if fp32 is None:
        raise InputError("--max-accuracy-drop", "the FP32 reference trial has not completed, so "
                                                "there is no accuracy to measure a drop from")
    return fp32.values[0] - max_drop


def _breach(option: Option, floor: float | None, limits: Limits) -> str | None:
    # The floor is a difference of floats: a trial exactly at it must not fall out by rounding.
    if floor is not None and option.accuracy < floor - 1e-9:
        return f"accuracy {option.accuracy:.2%} < {floor:.2%}"
    if limits.max_latency_ms is not None and option.latency_ms > limits.max_latency_ms:
        return f"{option.latency_ms:.2f} ms > {limits.max_latency_ms:g} ms"
    if limits.max_size_mb is not None and option.size_mb > limits.max_size_mb:
        return f"{option.size_mb:.1f} MB > {limits.max_size_mb:g} MB"
    return None


def _conditions(floor: float | None, limits: Limits, study: optuna.Study) -> str:
    parts = []
    if floor is not None:
        fp32 = reference(study)
        assert fp32 is not None  # a floor is only set from a complete reference
        parts.append(f"accuracy >= {floor:.2%} (FP32 reference {fp32.values[0]:.2%} - "
                     f"{limits.max_accuracy_drop:g})")
    if limits.max_latency_ms is not None:
        parts.append(f"latency <= {limits.max_latency_ms:g} ms")
    if limits.max_size_mb is not None:
        parts.append(f"size <= {limits.max_size_mb:g} MB")
    return " and ".join(parts)
