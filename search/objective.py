"""One trial: sample a recipe, build the candidate, measure it, record everything on the trial.

What a trial stores (read by ``status``, ``report`` and ``export``):

- values ``accuracy`` (validation) and ``latency_ms`` (drift-corrected: the ratio to the FP32
  reference measured beside it, times the reference latency at study start);
- user attrs ``recipe``, ``recipe_short``, ``measurement``, ``stage_seconds``, ``machine``, and on
  failure ``failure`` (stage and message);
- the candidate's ONNX file as an Optuna artifact (unless the config keeps none).
"""

from __future__ import annotations

import shutil
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.artifacts import upload_artifact

from edgetune.objectives.candidate import Candidate, StageError, Workbench, build, evaluate
from edgetune.objectives.machine import machine_record
from edgetune.search.study import REFERENCE, ROLE
from edgetune.spaces.recipe import Recipe
from edgetune.spaces.space import SearchSpace

if TYPE_CHECKING:
    from optuna.artifacts._protocol import ArtifactStore

REFERENCE_LATENCY = "reference_latency_ms"


class Objective:
    """The callable ``study.optimize`` runs for each trial."""

    def __init__(self, space: SearchSpace, bench: Workbench, run_dir: Path,
                 artifacts: ArtifactStore | None) -> None:
        self.space = space
        self.bench = bench
        self.run_dir = run_dir
        self.artifacts = artifacts

    def recipe(self, trial: optuna.Trial) -> Recipe:
        if trial.user_attrs.get(ROLE) == REFERENCE:
            return Recipe()
        return self.space.sample(trial)

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        recipe = self.recipe(trial)
        trial.set_user_attr("recipe", recipe.model_dump(mode="json"))
        trial.set_user_attr("recipe_short", recipe.short())
        trial.set_user_attr("machine", machine_record(self.bench.target.threads))
        workdir = self.run_dir / "work" / f"trial-{trial.number}"
        candidate = Candidate(path=workdir / "model.onnx")
        try:
            build(recipe, self.bench, candidate)
            measurement = evaluate(candidate, self.bench)
        except StageError as error:
            trial.set_user_attr("failure", {
                "stage": error.stage,
                "error": str(error.__cause__ or error),
                "type": type(error.__cause__ or error).__name__,
                "traceback": "".join(traceback.format_exception(error.__cause__ or error))[-4000:],
            })
            raise
        finally:
            trial.set_user_attr("stage_seconds",
                                {k: round(v, 2) for k, v in candidate.stage_seconds.items()})
        reference_ms = _study_reference_ms(trial.study, measurement.reference_latency.median_ms)
        latency_ms = measurement.ratio * reference_ms
        trial.set_user_attr("measurement", {
            "accuracy": measurement.accuracy,
            "latency_ms": latency_ms,
            "ratio": measurement.ratio,
            "latency": measurement.latency.as_dict(),
            "reference_latency": measurement.reference_latency.as_dict(),
            "size_mb": measurement.size_mb,
            "zipped_mb": measurement.zipped_mb,
            **candidate.notes,
        })
        if self.artifacts is not None:
            upload_artifact(artifact_store=self.artifacts, file_path=str(candidate.path),
                            study_or_trial=trial)
        shutil.rmtree(workdir, ignore_errors=True)
        return measurement.accuracy, latency_ms


def _study_reference_ms(study: optuna.Study, measured_ms: float) -> float:
    """The reference latency at study start: the first one measured, kept on the study."""
    stored = study.user_attrs.get(REFERENCE_LATENCY)
    if stored is None:
        study.set_user_attr(REFERENCE_LATENCY, measured_ms)
        return measured_ms
    return float(stored)
