"""A study as tidy pandas frames: one row per trial, and the Pareto front as the report shows it.

Everything the figures and tables draw comes from here, read from the trials' records
(``edgetune.search.record``). A trial missing a figure (an older study, a failure before
measurement) gets NaN / empty values, never an error: a report must open any study.
"""

from __future__ import annotations

import math
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from edgetune.objectives.machine import LEGACY_RUNTIME
from edgetune.search.front import front_of, search_front
from edgetune.search.record import REFERENCE, TrialRecord, records

COMPLETE = "complete"
NAN = float("nan")


def trials_frame(study: optuna.Study, device: str | None = None) -> pd.DataFrame:
    """One row per trial, in trial order, with its recipe, figures, confirmation and failure;
    with ``device``, with the figures that device's agent measured (no confirmation there)."""
    trials = study.get_trials(deepcopy=False)
    searched = search_front(study) if device is None else front_of(study, device)
    fronts = ({t.number for t in searched}, {t.number for t in front_of(study, device)})
    # Optuna's retry callback records, on the retry, the trials it retries (last: the one before).
    retried_as = {t.system_attrs["retry_history"][-1]: t.number for t in trials
                  if t.system_attrs.get("retry_history")}
    rows = [_trial_row(record, *(record.number in front for front in fronts))
            | {"retried_as": retried_as.get(record.number)}
            for record in records(study, device=device)]
    frame = pd.DataFrame(rows, columns=list(_trial_row_columns()))
    return frame.set_index("trial", drop=False)


def complete(trials: pd.DataFrame) -> pd.DataFrame:
    return trials[trials["state"] == COMPLETE]


def reference(trials: pd.DataFrame) -> pd.Series | None:
    """The complete FP32 reference trial, if the study has one."""
    rows = complete(trials)
    rows = rows[rows["role"] == REFERENCE]
    return None if rows.empty else rows.iloc[0]


def front_frame(trials: pd.DataFrame) -> pd.DataFrame:
    """The Pareto front, fastest first, with the figures the report stands behind.

    ``on_front`` marks the front (``edgetune.search.front``): where trials were confirmed
    (measured again, together, with more rounds), the front recomputed from their confirmed
    figures, which ``shown_latency_ms`` and ``shown_ratio`` then give; otherwise the search's own.
    Trials of the search's front that confirmation moved off it are kept, with ``on_front`` False.
    """
    rows = complete(trials)
    rows = rows.loc[rows["on_search_front"].astype(bool) | rows["on_front"].astype(bool)].copy()
    confirmed = rows["confirmed_latency_ms"].notna()
    rows["shown_latency_ms"] = rows["confirmed_latency_ms"].where(confirmed, rows["latency_ms"])
    rows["shown_ratio"] = rows["confirmed_ratio"].where(confirmed, rows["ratio"])
    rows["on_front"] = rows["on_front"].astype(bool)
    return rows.sort_values(["shown_latency_ms", "accuracy"], ascending=[True, False])


def failures(trials: pd.DataFrame) -> pd.DataFrame:
    """Failed and pruned trials, with the stage and the reason recorded on them."""
    return trials[trials["state"].isin(["fail", "pruned"])]


def _trial_row_columns() -> dict[str, None]:
    return dict.fromkeys([*_trial_row(TrialRecord.of(_EMPTY_TRIAL), False, False),
                          "retried_as"])


def _trial_row(record: TrialRecord, on_search_front: bool, on_front: bool) -> dict[str, Any]:
    trial, recipe = record.trial, record.recipe
    measured, confirmed = record.measured, record.confirmed
    # A pruned trial (stopped early below the accuracy floor, or a repeat) says why as
    # {stage, reason}.
    pruned = record.pruned or {}
    failure = record.failure or {"stage": pruned.get("stage", ""),
                                 "error": pruned.get("reason", "")}
    complete = trial.state == TrialState.COMPLETE and trial.values
    low_ms, high_ms = _spread_bounds(record)
    return {
        "trial": trial.number,
        "state": trial.state.name.lower(),
        "role": record.role,
        "recipe": record.recipe_short,
        "quantization": (recipe.get("quantization") or {}).get("scheme", ""),
        "pruning": (recipe.get("pruning") or {}).get("method", ""),
        "runtime": recipe.get("runtime") or (record.search_machine or {}).get("runtime",
                                                                               LEGACY_RUNTIME),
        "accuracy": record.accuracy if complete else NAN,  # the task metric, whichever it is
        "latency_ms": record.search_latency_ms if complete else NAN,
        "ratio": measured.ratio if measured else NAN,
        "spread": measured.latency.get("spread", NAN) if measured else NAN,
        "size_mb": record.size_mb,
        "zipped_mb": measured.zipped_mb if measured else NAN,
        "on_search_front": on_search_front,
        "on_front": on_front,  # the front shown: the confirmed one where trials were confirmed
        "confirmed_latency_ms": record.latency_ms if confirmed else NAN,
        "confirmed_low_ms": low_ms,
        "confirmed_high_ms": high_ms,
        "confirmed_ratio": confirmed.ratio if confirmed else NAN,
        "test_accuracy": _or_nan(confirmed.test_accuracy) if confirmed else NAN,
        # Counts, rows: true class, columns: predicted (None where not recorded: before 0.2).
        "confusion": measured.confusion if measured else None,
        "test_confusion": confirmed.test_confusion if confirmed else None,
        "confirmed_on_front": confirmed.on_front if confirmed else NAN,
        "moved_off_front": bool(confirmed and confirmed.moved_off_front),
        "params": dict(trial.params),
        "machine": record.search_machine or {},
        "started": trial.datetime_start,
        "completed": trial.datetime_complete,
        "failure_stage": failure.get("stage", ""),
        "failure_error": failure.get("error", ""),
        "failure_type": failure.get("type", ""),
        "failure_traceback": failure.get("traceback", ""),
    }


def _or_nan(value: float | None) -> float:
    return NAN if value is None else value


def _spread_bounds(record: TrialRecord) -> tuple[float, float]:
    """The confirmed latency's range over its rounds, on the drift-corrected scale.

    The round medians are raw milliseconds; the confirmed figure is drift-corrected. Their
    relative spread is what survives the correction, so the bounds scale the figure by the
    fastest and slowest round medians relative to the median of round medians.
    """
    confirmed = record.confirmed
    if confirmed is None:
        return NAN, NAN
    rounds = confirmed.latency.get("round_medians_ms") or []
    median = confirmed.latency.get("median_ms")
    latency = record.latency_ms
    if not rounds or not median or not math.isfinite(latency):
        return NAN, NAN
    return latency * min(rounds) / median, latency * max(rounds) / median


_EMPTY_TRIAL = optuna.trial.create_trial(state=TrialState.FAIL)
