"""One trial: sample a recipe, build the candidate, measure it, record everything on the trial.

What a trial stores (read by ``status``, ``report`` and ``export``):

- values ``accuracy`` (validation) and ``latency_ms`` (drift-corrected: the ratio to the FP32
  reference measured beside it, times the reference latency at study start);
- user attrs ``recipe``, ``recipe_short``, ``measurement``, ``stage_seconds``, ``machine``,
  ``worker`` and ``stage`` (the process running it and where it is, so a lost trial says where it
  stopped), and on failure ``failure`` (``edgetune.search.failures``);
- the candidate's ONNX file as an Optuna artifact.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact

from edgetune.objectives.candidate import Candidate, StageError, Workbench, build, evaluate
from edgetune.objectives.machine import machine_record
from edgetune.search.failures import FAILURE, STAGE, failure_record
from edgetune.search.lock import StudyLock
from edgetune.search.lost_trials import WORKER, worker_record
from edgetune.search.study import REFERENCE, ROLE
from edgetune.spaces.recipe import Recipe
from edgetune.spaces.space import SearchSpace

REFERENCE_LATENCY = "reference_latency_ms"


class Objective:
    """The callable ``study.optimize`` runs for each trial.

    The run loop holds the study lock from counting the trials until the next one exists; the
    trial releases it as soon as it has recorded its worker, so other workers can take theirs.
    """

    def __init__(self, space: SearchSpace, bench: Workbench, run_dir: Path,
                 artifacts: FileSystemArtifactStore, lock: StudyLock | None = None) -> None:
        self.space = space
        self.bench = bench
        self.run_dir = run_dir
        self.artifacts = artifacts
        self.lock = lock

    def recipe(self, trial: optuna.Trial) -> Recipe:
        if trial.user_attrs.get(ROLE) == REFERENCE:
            return Recipe()
        return self.space.sample(trial)

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        trial.set_user_attr(WORKER, worker_record())
        if self.lock is not None:
            self.lock.release()
        stages = _StageLog(trial)
        try:
            return self._build_and_measure(trial, stages)
        except optuna.TrialPruned:
            raise
        except BaseException as error:  # interrupts too: the trial records why it stopped
            if isinstance(error, StageError) and error.__cause__ is not None:
                trial.set_user_attr(FAILURE, failure_record(error.stage, error.__cause__))
            else:
                trial.set_user_attr(FAILURE, failure_record(stages.current, error))
            raise

    def _build_and_measure(self, trial: optuna.Trial, stages: _StageLog) -> tuple[float, float]:
        stages.enter("sample")
        recipe = self.recipe(trial)
        trial.set_user_attr("recipe", recipe.model_dump(mode="json"))
        trial.set_user_attr("recipe_short", recipe.short())
        trial.set_user_attr("machine", machine_record(self.bench.target.threads))
        workdir = self.run_dir / "work" / f"trial-{trial.number}"
        candidate = Candidate(path=workdir / "model.onnx", on_stage=stages.enter)
        try:
            build(recipe, self.bench, candidate)
            measurement = evaluate(candidate, self.bench)
        finally:
            trial.set_user_attr("stage_seconds",
                                {k: round(v, 2) for k, v in candidate.stage_seconds.items()})
        stages.enter("store")
        # the first trial to finish sets the study's reference latency, once for all workers
        with self.lock or contextlib.nullcontext():
            reference_ms = _study_reference_ms(trial.study,
                                               measurement.reference_latency.median_ms)
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
        upload_artifact(artifact_store=self.artifacts, file_path=str(candidate.path),
                        study_or_trial=trial)
        shutil.rmtree(workdir, ignore_errors=True)
        return measurement.accuracy, latency_ms


class _StageLog:
    """Keeps the trial's ``stage`` user attr current, so a trial lost to ``kill -9`` says where."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self.current = "start"

    def enter(self, stage: str) -> None:
        self.current = stage
        self.trial.set_user_attr(STAGE, stage)


def _study_reference_ms(study: optuna.Study, measured_ms: float) -> float:
    """The reference latency at study start: the first one measured, kept on the study."""
    stored = study.user_attrs.get(REFERENCE_LATENCY)
    if stored is None:
        study.set_user_attr(REFERENCE_LATENCY, measured_ms)
        return measured_ms
    return float(stored)
