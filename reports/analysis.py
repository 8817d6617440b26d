"""What a study's trials say beyond their own figures: knob importances and hypervolume progress.

Both are Optuna's own computations (``optuna.importance``, the hypervolume history behind
``optuna.visualization.plot_hypervolume_history``); this module chooses their settings and turns
their results into frames, or into a note saying why there is nothing to show yet.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from edgetune.reports.data import complete, reference
from edgetune.search.study import metric_name

# PED-ANOVA (Optuna's default evaluator, which handles our conditional parameters) compares the
# best tenth of trials with all of them: below this many trials with sampled parameters the best
# tenth is one or two trials and the importances say nothing.
MIN_TRIALS_FOR_IMPORTANCE = 8


@dataclass(frozen=True)
class Importances:
    """Per objective, each parameter's share of importance (rows: parameters, columns: objectives).

    ``frame`` is None when the study is too small or no parameter separates good trials from the
    rest; ``note`` says why, or how much to trust the figures.
    """

    frame: pd.DataFrame | None
    note: str


def importances(study: optuna.Study) -> Importances:
    searched = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.params]
    if len(searched) < MIN_TRIALS_FOR_IMPORTANCE:
        return Importances(None, (
            f"Importances need at least {MIN_TRIALS_FOR_IMPORTANCE} complete trials with sampled "
            f"parameters; this study has {len(searched)}. Run more trials to see which knob "
            "moves which objective."))
    # PED-ANOVA minimises its target: the task metric is negated so that "better" means the same
    # for both.
    targets = {metric_name(study): lambda t: -t.values[0], "latency_ms": lambda t: t.values[1]}
    with warnings.catch_warnings():
        # It warns that it minimises (handled above) and that rare conditional regimes give
        # rough estimates, which the note below tells the reader in their terms.
        warnings.simplefilter("ignore")
        frame = pd.DataFrame({
            name: optuna.importance.get_param_importances(study, target=target)
            for name, target in targets.items()
        }).fillna(0.0)
    if frame.empty or all(frame[column].nunique() <= 1 for column in frame):
        return Importances(None, (
            "No parameter separates the best trials from the rest yet (every importance is "
            "equal): run more trials."))
    frame = frame.loc[frame.max(axis=1).sort_values(ascending=False).index]
    return Importances(frame, (
        f"PED-ANOVA (Optuna) compares the best tenth of the {len(searched)} sampled trials with "
        "all of them, per objective; a parameter used only by some recipes (recovery after "
        "pruning, say) is judged within those. With few trials read these shares as rough."))


@dataclass(frozen=True)
class Hypervolume:
    """Hypervolume after each complete trial, by trial number and by wall time since the start."""

    frame: pd.DataFrame  # columns: trial, minutes, hypervolume
    reference_point: tuple[float, ...]  # (the task metric, latency_ms[, size_mb])
    explanation: str
    metric: str  # the task metric's name


def hypervolume(study: optuna.Study, trials: pd.DataFrame, labels: int = 0) -> Hypervolume | None:
    """Optuna's hypervolume history, against a reference point that means something here.

    The point is (chance accuracy, the FP32 reference's latency): a model no better than guessing
    among ``labels`` classes, or no faster than the uncompressed model, is worth nothing, so the
    area counts accuracy above chance times milliseconds saved, and every useful trial adds to
    it. With another task metric the floor stays 1 / labels: a uniform guesser's recall of any
    class, and about its macro-F1. (The worst trial's accuracy, the usual nadir point, would
    make the least accurate trial add nothing however fast it is.) Without labels the lowest
    score reached stands in for chance; without a complete reference trial, the slowest trial's
    latency for FP32's.
    """
    done = complete(trials)
    if done.empty:
        return None
    ref = reference(trials)
    if labels:
        floor, floor_source = 1 / labels, f"chance among {labels} labels"
    else:
        floor, floor_source = float(done["accuracy"].min()), "the lowest any complete trial reached"
    if ref is not None:
        latency, latency_source = float(ref["latency_ms"]), "the FP32 reference's latency"
    else:
        latency, latency_source = float(done["latency_ms"].max()), "the slowest trial's latency"
    point: tuple[float, ...] = (floor, latency)
    if len(study.directions) == 3:  # size_mb as a third objective (search.objectives)
        size = float(ref["size_mb"]) if ref is not None else float(done["size_mb"].max())
        point = (*point, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "experimental" labels, and empty-study notices
        history = optuna.visualization.plot_hypervolume_history(study, list(point)).data[0]
    # Other workers may have finished trials since ``trials`` was read: keep to that snapshot.
    points = [(int(n), y) for n, y in zip(history.x, history.y) if int(n) in done.index]
    numbers = [n for n, _ in points]
    start = trials["started"].dropna().min()
    minutes = [(done.loc[n, "completed"] - start).total_seconds() / 60 for n in numbers]
    frame = pd.DataFrame({"trial": numbers, "minutes": minutes,
                          "hypervolume": np.asarray([y for _, y in points], dtype=float)})
    metric = metric_name(study)
    explanation = (
        f"Reference point: {metric} {floor:.2%} ({floor_source}) and latency {latency:.2f} ms "
        f"({latency_source}). The hypervolume is the area of ({metric} above that floor) × "
        "(milliseconds saved against that latency) that the front dominates: it grows when a "
        "trial is faster or more accurate than the front so far; a candidate no faster than the "
        "reference or no better than the floor adds nothing. When it flattens, more trials of "
        "this search are unlikely to pay off."
        + (f" With size as a third objective the volume also counts MB saved against "
           f"{point[2]:.1f} MB ({latency_source.replace('latency', 'file size')})."
           if len(point) == 3 else ""))
    return Hypervolume(frame, point, explanation, metric)
