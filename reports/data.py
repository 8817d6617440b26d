"""A study as tidy pandas frames: one row per trial, and the Pareto front as the report shows it.

Everything the figures and tables draw comes from here, read from the trial user attrs that
``search/objective.py`` and the confirmation step write (PREAMBLE "Shared data formats"). A trial
missing an attr (an older study, a failure before measurement) gets NaN / empty values, never an
error: a report must open any study.
"""

from __future__ import annotations

import math
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from edgetune.search.study import REFERENCE, ROLE

COMPLETE = "complete"
NAN = float("nan")


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial, in trial order, with its recipe, figures, confirmation and failure."""
    trials = study.get_trials(deepcopy=False)
    front = {trial.number for trial in study.best_trials}
    # Optuna's retry callback records, on the retry, the trials it retries (last: the one before).
    retried_as = {t.system_attrs["retry_history"][-1]: t.number for t in trials
                  if t.system_attrs.get("retry_history")}
    rows = [_trial_row(trial, trial.number in front) | {"retried_as": retried_as.get(trial.number)}
            for trial in trials]
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
    """The search's Pareto front, fastest first, with the figures the report stands behind.

    Where the front was confirmed (measured again, together, with more rounds), ``shown_latency_ms``
    and ``shown_ratio`` are the confirmed figures, and ``on_front`` says whether the trial stayed
    on the front recomputed from them; otherwise they are the search's own figures.
    """
    rows = complete(trials)
    rows = rows.loc[rows["on_search_front"].astype(bool)].copy()
    confirmed = rows["confirmed_latency_ms"].notna()
    rows["shown_latency_ms"] = rows["confirmed_latency_ms"].where(confirmed, rows["latency_ms"])
    rows["shown_ratio"] = rows["confirmed_ratio"].where(confirmed, rows["ratio"])
    rows["on_front"] = rows["confirmed_on_front"].where(confirmed, True).astype(bool)
    return rows.sort_values(["shown_latency_ms", "accuracy"], ascending=[True, False])


def failures(trials: pd.DataFrame) -> pd.DataFrame:
    """Failed and pruned trials, with the stage and the reason recorded on them."""
    return trials[trials["state"].isin(["fail", "pruned"])]


def _trial_row_columns() -> dict[str, None]:
    return dict.fromkeys([*_trial_row(_EMPTY_TRIAL, False), "retried_as"])


def _trial_row(trial: FrozenTrial, on_search_front: bool) -> dict[str, Any]:
    attrs = trial.user_attrs
    recipe = attrs.get("recipe") or {}
    measurement = attrs.get("measurement") or {}
    confirmed = attrs.get("confirmed") or {}
    # A pruned trial (stopped early below the accuracy floor) says why as {stage, reason}.
    pruned = attrs.get("pruned") or {}
    failure = attrs.get("failure") or {"stage": pruned.get("stage", ""),
                                        "error": pruned.get("reason", "")}
    values = trial.values if trial.state == TrialState.COMPLETE and trial.values else (NAN, NAN)
    low_ms, high_ms = _spread_bounds(confirmed)
    return {
        "trial": trial.number,
        "state": trial.state.name.lower(),
        "role": attrs.get(ROLE, ""),
        "recipe": attrs.get("recipe_short", ""),
        "quantization": (recipe.get("quantization") or {}).get("scheme", ""),
        "pruning": (recipe.get("pruning") or {}).get("method", ""),
        "accuracy": values[0],
        "latency_ms": values[1],
        "ratio": measurement.get("ratio", NAN),
        "spread": (measurement.get("latency") or {}).get("spread", NAN),
        "size_mb": measurement.get("size_mb", NAN),
        "zipped_mb": measurement.get("zipped_mb", NAN),
        "on_search_front": on_search_front,
        "confirmed_latency_ms": confirmed.get("latency_ms", NAN),
        "confirmed_low_ms": low_ms,
        "confirmed_high_ms": high_ms,
        "confirmed_ratio": confirmed.get("ratio", NAN),
        "test_accuracy": confirmed.get("test_accuracy", NAN),
        "confirmed_on_front": confirmed.get("on_front", NAN),
        "moved_off_front": bool(confirmed.get("moved_off_front", False)),
        "params": dict(trial.params),
        "machine": attrs.get("machine") or {},
        "started": trial.datetime_start,
        "completed": trial.datetime_complete,
        "failure_stage": failure.get("stage", ""),
        "failure_error": failure.get("error", ""),
        "failure_type": failure.get("type", ""),
        "failure_traceback": failure.get("traceback", ""),
    }


def _spread_bounds(confirmed: dict[str, Any]) -> tuple[float, float]:
    """The confirmed latency's range over its rounds, on the drift-corrected scale.

    The round medians are raw milliseconds; the confirmed figure is drift-corrected. Their
    relative spread is what survives the correction, so the bounds scale the figure by the
    fastest and slowest round medians relative to the median of round medians.
    """
    stats = confirmed.get("latency") or {}
    rounds = stats.get("round_medians_ms") or []
    median = stats.get("median_ms")
    latency = confirmed.get("latency_ms")
    if not rounds or not median or latency is None or not math.isfinite(latency):
        return NAN, NAN
    return latency * min(rounds) / median, latency * max(rounds) / median


_EMPTY_TRIAL = optuna.trial.create_trial(state=TrialState.FAIL)
