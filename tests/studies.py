"""Studies made by hand with the trial records ``edgetune run`` writes.

``trial`` writes a complete trial's record (``edgetune.search.record``) as the objective does;
``sampled_study`` samples real recipes from the default search space and gives each figures that
follow from its knobs, so importances and hypervolume have something to find: both
in memory, for fast report tests. ``HandmadeStudy`` is a study on disk, as ``edgetune run`` leaves
it, whose trials' figures and model files (artifacts) a test chooses: for confirm and front tests.
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.trial import FrozenTrial, TrialState

from edgetune.objectives.machine import machine_record
from edgetune.search.config import StudyConfig
from edgetune.search.record import (
    FAILURE,
    MACHINE,
    MEASUREMENT,
    RECIPE,
    RECIPE_SHORT,
    ROLE,
    Measured,
)
from edgetune.search.study import (
    DIRECTIONS,
    OBJECTIVES,
    REFERENCE_LATENCY,
    Location,
    make_storage,
    open_study,
)
from edgetune.spaces.pruning import StructuredPruning, UnstructuredPruning
from edgetune.spaces.quantization import DynamicQuantization
from edgetune.spaces.recipe import Recipe
from edgetune.spaces.space import SearchSpace

from helpers import tiny_config

REFERENCE_MS = 10.0
DYNAMIC = Recipe(quantization=DynamicQuantization())
STRUCTURED = Recipe(pruning=StructuredPruning(heads_kept=0.5, ffn_kept=0.5, scope="layer",
                                               layers_dropped=3, layer_selection="even"),
                    quantization=DynamicQuantization())
UNSTRUCTURED = Recipe(pruning=UnstructuredPruning(ratio=0.5))


def latency_stats(median_ms: float, rounds: list[float] | None = None) -> dict[str, Any]:
    rounds = rounds or [median_ms] * 3
    return {"median_ms": median_ms, "p90_ms": max(rounds), "round_medians_ms": rounds,
            "spread": (max(rounds) - min(rounds)) / median_ms}


def trial(accuracy: float, latency_ms: float, recipe: Recipe = Recipe(), role: str = "",
          size_mb: float = 20.0, zipped_mb: float = 18.0,
          system_attrs: dict[str, Any] | None = None, reference_ms: float = REFERENCE_MS,
          **attrs: Any) -> FrozenTrial:
    """A complete trial as the objective records it (plus any extra user attrs): ``latency_ms``
    on the study's scale, the FP32 reference measured beside it at ``reference_ms``."""
    ratio = latency_ms / REFERENCE_MS
    measured = Measured(accuracy=accuracy, latency_ms=latency_ms, ratio=ratio,
                        latency=latency_stats(ratio * reference_ms),
                        reference_latency=latency_stats(reference_ms), size_mb=size_mb,
                        zipped_mb=zipped_mb)
    user_attrs = {
        RECIPE: recipe.model_dump(mode="json"), RECIPE_SHORT: recipe.short(),
        MACHINE: {"host": "h", "cpu": "Test CPU", "cores": 2, "threads": 2,
                  "runtime": "onnxruntime", "onnxruntime": "1.0", "edgetune": "0.1.0"},
        MEASUREMENT: measured.as_dict(),
        **({ROLE: role} if role else {}), **attrs,
    }
    return optuna.trial.create_trial(values=[accuracy, latency_ms], user_attrs=user_attrs,
                                     system_attrs=system_attrs)


def failed(stage: str, error: str, recipe: Recipe = DYNAMIC) -> FrozenTrial:
    return optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={
        RECIPE: recipe.model_dump(mode="json"), RECIPE_SHORT: recipe.short(),
        FAILURE: {"stage": stage, "error": error, "type": "RuntimeError",
                  "traceback": f"Traceback ...\nRuntimeError: {error}"}})


def killed() -> FrozenTrial:
    """A trial whose process died: Optuna marked it failed, with nothing recorded by edgetune."""
    return optuna.trial.create_trial(state=TrialState.FAIL)


def retry_of(number: int, accuracy: float, latency_ms: float) -> FrozenTrial:
    """The trial Optuna's retry callback runs in place of trial ``number``."""
    return trial(accuracy, latency_ms, DYNAMIC,
                 system_attrs={"failed_trial": number, "retry_history": [number]})


def study_of(trials: list[FrozenTrial], config: dict[str, Any] | None = None,
             name: str = "synthetic") -> optuna.Study:
    study = optuna.create_study(directions=list(DIRECTIONS), study_name=name)
    study.set_metric_names(list(OBJECTIVES))
    study.set_user_attr("config", config or {"study": name, "target": {"threads": 2}})
    study.set_user_attr("data", {"labels": ["a", "b"], "sizes": {"validation": 10}})
    study.add_trials(trials)
    return study


def sampled_study(trials: int, seed: int = 0) -> optuna.Study:
    """The FP32 reference, then ``trials`` recipes sampled from the default space.

    Quantization and layers dropped set the latency; they and pruning set the accuracy, so a
    correct importance analysis ranks them above knobs that do nothing (calibration, say).
    """
    rng = random.Random(seed)
    study = study_of([trial(0.97, REFERENCE_MS, role="reference")])
    study.sampler = optuna.samplers.RandomSampler(seed=seed)
    space = SearchSpace()
    for _ in range(trials):
        asked = study.ask()
        recipe = space.sample(asked)
        layers = 6 - getattr(recipe.pruning, "layers_dropped", 0)
        quantized = recipe.quantization.scheme != "none"
        latency = REFERENCE_MS * layers / 6 * (0.55 if quantized else 1.0) * rng.uniform(0.97, 1.03)
        accuracy = 0.97 - 0.03 * (6 - layers) - (0.01 if quantized else 0.0) - rng.uniform(0, 0.005)
        for key, value in trial(accuracy, latency, recipe).user_attrs.items():
            asked.set_user_attr(key, value)
        study.tell(asked, [accuracy, latency])
    return study


class HandmadeStudy:
    """A study as ``edgetune run`` leaves it, whose trials' figures and files the test chooses."""

    def __init__(self, folder: Path, model: Path, data: Path, **sections: Any) -> None:
        self.config = StudyConfig.model_validate(tiny_config(model, data, **sections))
        self.location = Location.resolve(self.config.study, folder)
        self.location.run_dir.mkdir(parents=True, exist_ok=True)
        self.study = open_study(self.config, self.location.study,  # trial 0: the FP32 reference
                                make_storage(self.location.storage))
        self.study.set_user_attr(REFERENCE_LATENCY, 1.0)
        self.location.artifacts.mkdir(parents=True, exist_ok=True)

    def add(self, accuracy: float, latency_ms: float, model: Path,
            machine: dict[str, object] | None = None) -> int:
        """A complete trial measured at (accuracy, latency_ms) whose ONNX file is ``model``."""
        with warnings.catch_warnings():  # heartbeats are for optimize(); ask/tell is fine here
            warnings.simplefilter("ignore", UserWarning)
            trial = self.study.ask()
        trial.set_user_attr(RECIPE_SHORT, f"{model.stem} model")
        trial.set_user_attr(MACHINE, machine or machine_record(self.config.target))
        trial.set_user_attr(MEASUREMENT, Measured(ratio=latency_ms, size_mb=1.0).as_dict())
        upload_artifact(artifact_store=FileSystemArtifactStore(str(self.location.artifacts)),
                        file_path=str(model), study_or_trial=trial)
        self.study.tell(trial, [accuracy, latency_ms])
        return trial.number

    def cli_args(self) -> list[str]:
        return ["--run-dir", str(self.location.run_dir), "--study", self.config.study]

    def reloaded(self) -> optuna.Study:
        return optuna.load_study(study_name=self.config.study, storage=self.location.storage)
