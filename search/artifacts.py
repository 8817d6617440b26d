"""Where trial models are kept (an Optuna artifact store) and which ones are kept.

Each complete trial uploads its ONNX file as an Optuna artifact linked from the trial, so
``edgetune export --trial N`` needs nothing but the study's storage and this store.
The store is a folder (``<run-dir>/artifacts`` by default; a shared folder serves several
machines) or ``s3://bucket/prefix`` through Optuna's ``Boto3ArtifactStore``. ``keep`` trades disk
for export time: a model that was not kept is rebuilt from its recipe on export.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Literal

import optuna
from optuna.artifacts import (
    ArtifactMeta,
    FileSystemArtifactStore,
    download_artifact,
    get_all_artifact_meta,
)
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState
from pydantic import Field, field_validator

from edgetune.errors import InputError
from edgetune.objectives.paths import resolve_path
from edgetune.objectives.runtimes import RUNTIMES
from edgetune.search.front import front_of, reference, search_front
from edgetune.spaces.base import Strict

if TYPE_CHECKING:
    from optuna.artifacts._protocol import ArtifactStore

S3_SCHEME = "s3://"
MODEL_SUFFIXES = tuple(info.suffix for info in RUNTIMES.values())  # .onnx, .tflite, .pte


class ArtifactsConfig(Strict):
    """The ``artifacts:`` section: where trial models go and which ones stay after a run.

    ``keep: front`` removes, after each run, the models of trials that are not on the front
    (the FP32 reference's stays: every export is measured against it). Workers sharing one store
    can each do this when they finish: a model that a later confirmation puts back on the front is
    rebuilt from its recipe when confirm or export needs it.
    """

    store: str | None = Field(
        default=None,
        description="a folder (relative to the config) or s3://bucket/prefix "
                    "[default: <run-dir>/artifacts]",
    )
    keep: Literal["front", "all", "none"] = "all"

    @field_validator("store")
    @classmethod
    def _folder_or_s3(cls, store: str | None) -> str | None:
        if store is None:
            return None
        if "://" in store and not store.startswith(S3_SCHEME):
            raise ValueError("expected a folder path or s3://bucket/prefix")
        if store.startswith(S3_SCHEME) and not store[len(S3_SCHEME):].split("/")[0]:
            raise ValueError("an S3 store needs a bucket: s3://bucket/prefix")
        return store


def open_store(config: ArtifactsConfig, default: Path, base: Path | None = None,
               create: bool = False) -> ArtifactStore:
    """The artifact store ``config`` names, else the ``default`` folder (``<run-dir>/artifacts``).

    A relative folder is taken from ``base`` (the config's folder); ``create`` makes a missing
    folder (a run writes to it; an export only reads).
    """
    if config.store is not None and config.store.startswith(S3_SCHEME):
        bucket, _, prefix = config.store[len(S3_SCHEME):].partition("/")
        return _s3_store(bucket, prefix)
    folder = (default if config.store is None
              else resolve_path(config.store, base, field="artifacts.store"))
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(folder)


def describe(config: ArtifactsConfig, default: Path) -> str:
    return config.store or str(default)


def model_artifact(study: optuna.Study | BaseStorage, trial: FrozenTrial) -> ArtifactMeta | None:
    """The trial's model as recorded on the trial (its file may since have been removed), read
    through the study's storage or ``study`` itself, a storage.

    Raises:
        InputError: the recorded artifact id is not one Optuna wrote (a UUID): an id such as
            ``../x`` would read or remove a file outside the store.
    """
    storage = study._storage if isinstance(study, optuna.Study) else study
    metas = [meta for meta in get_all_artifact_meta(trial, storage=storage)
             if meta.filename.endswith(MODEL_SUFFIXES)]
    if not metas:
        return None
    meta = metas[-1]
    if not _is_uuid(meta.artifact_id):
        raise InputError(
            f"trial {trial.number}",
            f"refusing artifact id {meta.artifact_id!r}: Optuna names artifacts by UUID, and "
            "this one would reach outside the artifact store",
        )
    return meta


def fetch(store: ArtifactStore, meta: ArtifactMeta, target: Path) -> bool:
    """Download the artifact to ``target``; False if the store no longer holds it.

    Raises:
        InputError: the store cannot be read (no access, no such bucket, no network).
    """
    try:
        download_artifact(artifact_store=store, file_path=str(target),
                          artifact_id=meta.artifact_id)
    except ArtifactNotFound:
        target.unlink(missing_ok=True)
        return False
    except Exception as error:  # each store's client raises its own types (OSError, botocore)
        target.unlink(missing_ok=True)
        raise InputError("artifacts.store", f"cannot read artifact {meta.artifact_id}: "
                                            f"{type(error).__name__}: {error}") from error
    return True


def discard_off_front(study: optuna.Study, store: ArtifactStore) -> int:
    """Remove the models of complete trials off the front (the search's and the confirmed one);
    return how many were removed."""
    kept = {trial.number for trial in [*search_front(study), *front_of(study)]}
    fp32 = reference(study)
    if fp32 is not None:
        kept.add(fp32.number)
    removed = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        meta = model_artifact(study, trial) if trial.number not in kept else None
        if meta is None:
            continue
        try:
            store.remove(meta.artifact_id)
            removed += 1
        except ArtifactNotFound:  # another worker sharing the store removed it first
            pass
    return removed


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def _s3_store(bucket: str, prefix: str) -> ArtifactStore:
    try:
        from optuna.artifacts import Boto3ArtifactStore

        store = Boto3ArtifactStore(bucket)
    except ImportError as error:
        raise InputError("artifacts.store", "an s3:// store needs boto3: pip install boto3") \
            from error
    return _Prefixed(store, prefix.strip("/")) if prefix.strip("/") else store


class _Prefixed:
    """Keys under ``prefix/`` in the bucket: Optuna's Boto3 store writes at the bucket's root,
    and one bucket often serves several studies."""

    def __init__(self, store: ArtifactStore, prefix: str) -> None:
        self._store = store
        self._prefix = prefix + "/"

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self._store.open_reader(self._prefix + artifact_id)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self._store.write(self._prefix + artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        self._store.remove(self._prefix + artifact_id)
