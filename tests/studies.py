"""Studies made by hand, with chosen figures and model files, for front and confirmation tests."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact

from edgetune.objectives.machine import machine_record
from edgetune.search.config import StudyConfig
from edgetune.search.study import REFERENCE_LATENCY, Location, open_study
from helpers import tiny_config


class HandmadeStudy:
    """A study as ``edgetune run`` leaves it, whose trials' figures and files the test chooses."""

    def __init__(self, folder: Path, model: Path, data: Path, **sections: Any) -> None:
        self.config = StudyConfig.model_validate(tiny_config(model, data, **sections))
        self.location = Location.resolve(self.config.study, folder)
        self.study = open_study(self.config, self.location)  # trial 0 is the FP32 reference
        self.study.set_user_attr(REFERENCE_LATENCY, 1.0)
        self.location.artifacts.mkdir(parents=True, exist_ok=True)

    def add(self, accuracy: float, latency_ms: float, model: Path,
            machine: dict[str, object] | None = None) -> int:
        """A complete trial measured at (accuracy, latency_ms) whose ONNX file is ``model``."""
        with warnings.catch_warnings():  # heartbeats are for optimize(); ask/tell is fine here
            warnings.simplefilter("ignore", UserWarning)
            trial = self.study.ask()
        trial.set_user_attr("recipe_short", f"{model.stem} model")
        trial.set_user_attr("machine", machine or machine_record(self.config.target.threads))
        trial.set_user_attr("measurement", {"ratio": latency_ms, "size_mb": 1.0})
        upload_artifact(artifact_store=FileSystemArtifactStore(str(self.location.artifacts)),
                        file_path=str(model), study_or_trial=trial)
        self.study.tell(trial, [accuracy, latency_ms])
        return trial.number

    def cli_args(self) -> list[str]:
        return ["--run-dir", str(self.location.run_dir), "--study", self.config.study]

    def reloaded(self) -> optuna.Study:
        return optuna.load_study(study_name=self.config.study, storage=self.location.storage)
