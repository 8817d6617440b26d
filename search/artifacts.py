"""A trial's ONNX file, wherever it is kept: today, the trial's Optuna artifact.

Every reader of trial models (confirm, export) goes through ``trial_model``, so that a later
keep-policy that deletes some artifacts needs one fallback here (rebuilding from the recipe).
"""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact, get_all_artifact_meta
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial

from edgetune.errors import InputError


def trial_model(trial: FrozenTrial, storage: optuna.storages.BaseStorage, artifacts: Path,
                folder: Path) -> Path:
    """Download ``trial``'s ONNX model from the artifact store at ``artifacts`` into ``folder``.

    Raises:
        InputError: the trial has no ONNX artifact, or the store does not hold it.
    """
    metas = [m for m in get_all_artifact_meta(trial, storage=storage)
             if m.filename.endswith(".onnx")]
    if not metas:
        raise InputError("--run-dir", f"trial {trial.number} has no ONNX model artifact")
    path = folder / f"trial-{trial.number}.onnx"
    try:
        download_artifact(artifact_store=FileSystemArtifactStore(str(artifacts)),
                          file_path=str(path), artifact_id=metas[-1].artifact_id)
    except ArtifactNotFound as error:
        raise InputError("--run-dir", f"the model of trial {trial.number} is not in {artifacts} "
                         "(name the study's run folder with --run-dir)") from error
    return path
