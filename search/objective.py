"""One trial: sample a recipe, build the candidate, measure it, record everything on the trial.

What a trial stores is its record (``edgetune.search.record``):

- values ``accuracy`` (the task metric on validation, which Optuna names after it:
  ``task.metric``) and ``latency_ms`` (drift-corrected: the ratio to the FP32 reference measured
  beside it, times the reference latency at study start), then ``size_mb`` when the config adds
  it as a third objective;
- the record's user attrs: recipe, measurement, machine, worker and stage (so a lost trial says
  where it stopped), stage seconds, and on failure the failure (``edgetune.search.failures``);
- constraints (``search.constraints``) through ``trial.set_constraint``;
- when it trained under an accuracy floor, the early-stopping record; if that stopped it, the
  trial is PRUNED with the reason; a trial that samples the recipe of an earlier one is PRUNED
  before building (``edgetune.search.repeats``);
- the candidate's model file as an Optuna artifact (unless the config keeps none).

With ``target.device`` the trial is built here and measured by that device's agent
(``edgetune.search.devices``): ``build_for_device`` stores the candidate and marks the trial,
``record_device`` records what the device measured, through the same ``_store`` as a trial
measured here.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
import torch
from optuna.artifacts import upload_artifact
from optuna.trial import FrozenTrial

from edgetune.objectives.accuracy import scored
from edgetune.objectives.build import Candidate, StageError, Workbench
from edgetune.objectives.candidate import build, evaluate, model_file, training_phases
from edgetune.objectives.machine import machine_key, machine_record
from edgetune.objectives.measurement import Measurement
from edgetune.objectives.metrics import texts_behind
from edgetune.objectives.training import StepCallback, torch_score
from edgetune.search import constraints
from edgetune.search.baselines import reference_params
from edgetune.search.config import SearchConfig
from edgetune.search.early_stopping import EarlyStopping, noise_margin
from edgetune.search.failures import failure_record
from edgetune.search.lock import StudyLock
from edgetune.search.lost_trials import worker_record
from edgetune.search.record import (
    AWAITING,
    BUILD_NOTES,
    EARLY_STOPPING,
    FAILURE,
    MACHINE,
    MEASUREMENT,
    PRUNED,
    RECIPE,
    RECIPE_SHORT,
    REFERENCE,
    ROLE,
    RUNGS,
    STAGE,
    STAGE_SECONDS,
    WORKER,
    DeviceFigures,
    Measured,
    anchors,
)
from edgetune.search.repeats import earlier_trial, prune_as_duplicate
from edgetune.search.rungs import Rungs, peers_of
from edgetune.search.study import REFERENCE_LATENCY
from edgetune.spaces.recipe import Recipe
from edgetune.spaces.space import SearchSpace

if TYPE_CHECKING:
    from optuna.artifacts._protocol import ArtifactStore

# The FP32 reference's validation score of the task metric (the name is the stored format's).
REFERENCE_ACCURACY = "reference_accuracy"


class Objective:
    """The callable ``study.optimize`` runs for each trial.

    The run loop holds the study lock from counting the trials until the next one exists; the
    trial releases it as soon as it has recorded its worker, so other workers can take theirs.
    """

    def __init__(self, space: SearchSpace, bench: Workbench, run_dir: Path,
                 artifacts: ArtifactStore | None, search: SearchConfig | None = None,
                 lock: StudyLock | None = None) -> None:
        self.space = space
        self.bench = bench
        self.run_dir = run_dir
        self.artifacts = artifacts
        self.search = search or SearchConfig()
        self.lock = lock

    def recipe(self, trial: optuna.Trial) -> Recipe:
        """The trial's recipe; the FP32 reference is sampled too, from its enqueued parameters,
        unless the space cannot express it."""
        runtime = self.bench.target.runtime
        if trial.user_attrs.get(ROLE) == REFERENCE and not reference_params(self.space, runtime):
            return Recipe()
        return self.space.sample(trial, runtime)

    @functools.cached_property
    def reference_accuracy(self) -> float:
        """The FP32 reference's validation score of the task metric, scored here as every trial
        is (ONNX Runtime is deterministic on one machine), so that no worker waits for trial 0."""
        task = self.bench.task
        return scored(self.bench.reference(), task.encoded("validation"),
                      task.labels("validation"), self.bench.target, task.config.metric,
                      task.label_names).value

    @property
    def floor(self) -> float | None:
        """The lowest validation score of the task metric the constraints allow (None: no
        ``max_accuracy_drop``)."""
        if self.search.constraints.max_accuracy_drop is None:
            return None
        return self.search.constraints.floor(self.reference_accuracy)

    def early_stopping(self, recipe: Recipe) -> EarlyStopping | None:
        """A training callback that stops the trial below the accuracy floor, if it trains."""
        phases = training_phases(recipe, self.bench)
        if not phases or not self.search.early_stopping or self.floor is None:
            return None
        return EarlyStopping(self.floor, phases, self._torch_score,
                             noise_margin(self.floor, self._scored_texts))

    def _torch_score(self, model: torch.nn.Module) -> float:
        """The task metric of a model still training, on validation: what a check compares."""
        return torch_score(model, self.bench.task)

    @functools.cached_property
    def _scored_texts(self) -> int:
        """How many validation texts the task metric is computed over (its noise margin's)."""
        task = self.bench.task
        return texts_behind(task.config.metric, task.labels("validation"), task.label_names)

    def rungs(self, trial: optuna.Trial, recipe: Recipe) -> Rungs | None:
        """A training callback that compares the recovery with smaller candidates' at the
        ``search.rungs`` steps, if the recipe recovers and rungs are set."""
        phases = training_phases(recipe, self.bench)
        if not self.search.rungs or not phases or phases[0][0] != "recovery":
            return None

        def peers() -> list[FrozenTrial]:
            return peers_of(recipe, (t for t in trial.study.get_trials(deepcopy=False)
                                     if t.number != trial.number))

        return Rungs(self.search.rungs, phases[0][1], peers, self._torch_score,
                     self._scored_texts, lambda record: trial.set_user_attr(RUNGS, record))

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        """Build the trial's candidate, measure it here beside the FP32 reference, record it."""
        stages = self._start(trial)
        with _failure_recorded(trial, stages):
            recipe, candidate = self._build(trial, stages)
            measurement = evaluate(candidate, self.bench)
            if self.artifacts is not None:
                upload_artifact(artifact_store=self.artifacts, file_path=str(candidate.path),
                                study_or_trial=trial)
            shutil.rmtree(candidate.path.parent, ignore_errors=True)
            return self._store(trial, stages, measurement,
                               machine_record(self.bench.target, recipe.runtime),
                               candidate.stage_seconds, candidate.notes)
        raise AssertionError("unreachable: the failure is re-raised")

    def build_for_device(self, trial: optuna.Trial, device: str) -> None:
        """Build the trial's candidate and leave it for ``device``'s agent: stored as the trial's
        artifact, the trial marked ``awaiting_device`` (``edgetune.search.devices``).

        Raises:
            optuna.TrialPruned: a repeat, or stopped below the accuracy floor.
            Exception: the build failed; the failure is recorded on the trial.
        """
        assert self.artifacts is not None, "a device study keeps its models (config check)"
        stages = self._start(trial)
        with _failure_recorded(trial, stages):
            _, candidate = self._build(trial, stages)
            upload_artifact(artifact_store=self.artifacts, file_path=str(candidate.path),
                            study_or_trial=trial)
            shutil.rmtree(candidate.path.parent, ignore_errors=True)
            trial.set_user_attr(BUILD_NOTES, candidate.notes)
            stages.enter("awaiting device")
            trial.set_user_attr(AWAITING, device)

    def record_device(self, trial: optuna.Trial, figures: DeviceFigures) -> tuple[float, ...]:
        """Record what the device measured as the trial's own figures and return its values."""
        assert figures.measurement is not None and figures.machine is not None
        stages = _StageLog(trial)
        with _failure_recorded(trial, stages):
            seconds = {**trial.user_attrs.get(STAGE_SECONDS, {}),
                       "device": figures.measurement.get("seconds", 0.0)}
            return self._store(trial, stages, Measurement.from_dict(figures.measurement),
                               figures.machine, seconds, trial.user_attrs.get(BUILD_NOTES, {}))
        raise AssertionError("unreachable: the failure is re-raised")

    def _start(self, trial: optuna.Trial) -> _StageLog:
        trial.set_user_attr(WORKER, worker_record())
        if self.lock is not None:
            self.lock.release()
        return _StageLog(trial)

    def _build(self, trial: optuna.Trial, stages: _StageLog) -> tuple[Recipe, Candidate]:
        stages.enter("sample")
        recipe = self.recipe(trial)
        trial.set_user_attr(RECIPE, recipe.model_dump(mode="json"))
        trial.set_user_attr(RECIPE_SHORT, recipe.short())
        trial.set_user_attr(MACHINE, machine_record(self.bench.target, recipe.runtime))
        if (original := earlier_trial(trial)) is not None:
            prune_as_duplicate(trial, original)
        workdir = self.run_dir / "work" / f"trial-{trial.number}"
        candidate = Candidate(path=workdir / model_file(recipe, self.bench), on_stage=stages.enter)
        stopper = self.early_stopping(recipe)
        rungs = self.rungs(trial, recipe)
        callbacks = [c for c in (stopper, rungs) if c is not None]
        try:
            build(recipe, self.bench, candidate, _each(callbacks), 1 if callbacks else 0)
        except optuna.TrialPruned:
            if rungs is not None and rungs.reason is not None:
                trial.set_user_attr(PRUNED, {"stage": "recovery", "reason": rungs.reason})
                raise
            assert stopper is not None and stopper.reason is not None
            trial.set_user_attr(PRUNED, {"stage": stopper.checks[-1].phase,
                                           "reason": stopper.reason})
            # What the trial is known to miss, so that samplers steer away from its region.
            trial.set_constraint(constraints.ACCURACY, stopper.floor - stopper.best_accuracy)
            raise
        finally:
            trial.set_user_attr(STAGE_SECONDS,
                                {k: round(v, 2) for k, v in candidate.stage_seconds.items()})
            if stopper is not None:
                trial.set_user_attr(EARLY_STOPPING, stopper.record())
        return recipe, candidate

    def _store(self, trial: optuna.Trial, stages: _StageLog, measurement: Measurement,
               machine: dict[str, object], stage_seconds: dict[str, float],
               notes: dict[str, object]) -> tuple[float, ...]:
        """Record ``measurement``, taken on ``machine``, as the trial's and return its values."""
        stages.enter("store")
        trial.set_user_attr(MACHINE, machine)
        trial.set_user_attr(STAGE_SECONDS, {k: round(v, 2) for k, v in stage_seconds.items()})
        # the first trial to finish sets the study's reference latency, once for all workers
        with self.lock or contextlib.nullcontext():
            reference_ms = _study_reference_ms(trial.study,
                                               measurement.reference_latency.median_ms)
        measured = Measured.beside(measurement.latency, measurement.reference_latency,
                                   reference_ms, accuracy=measurement.accuracy,
                                   size_mb=measurement.size_mb, zipped_mb=measurement.zipped_mb,
                                   confusion=measurement.confusion, **notes)
        trial.set_user_attr(MEASUREMENT, measured.as_dict())
        # The budget is judged on the milliseconds the study shows (``record.anchors``).
        here = machine_key(machine)
        anchor = anchors(trial.study.get_trials(deepcopy=False),
                         also=(here, measurement.reference_latency.median_ms))[here]
        constraints.set_constraints(trial, self.search.constraints.violations(
            measurement.accuracy, measured.ratio * anchor.ms, measurement.size_mb, self.floor))
        if self.floor is not None and REFERENCE_ACCURACY not in trial.study.user_attrs:
            trial.study.set_user_attr(REFERENCE_ACCURACY, self.reference_accuracy)
        values = {"accuracy": measurement.accuracy, "latency_ms": measured.latency_ms,
                  "size_mb": measurement.size_mb}
        return tuple(values[name] for name in self.search.objectives)


def _each(callbacks: list[StepCallback]) -> StepCallback | None:
    """One training callback that calls ``callbacks`` in turn (None for none)."""
    if not callbacks:
        return None

    def call(step: int, model: torch.nn.Module) -> None:
        for callback in callbacks:
            callback(step, model)

    return call


@contextlib.contextmanager
def _failure_recorded(trial: optuna.Trial, stages: _StageLog) -> Iterator[None]:
    """A failure (interrupts too) records on the trial why it stopped, then goes on up."""
    try:
        yield
    except optuna.TrialPruned:
        raise
    except BaseException as error:
        if isinstance(error, StageError) and error.__cause__ is not None:
            trial.set_user_attr(FAILURE, failure_record(error.stage, error.__cause__))
        else:
            trial.set_user_attr(FAILURE, failure_record(stages.current, error))
        raise


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
