"""Trial models go to the artifact store the config names, and only the ones it says to keep."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.artifacts import upload_artifact

from edgetune.errors import InputError
from edgetune.search.artifacts import (
    ArtifactsConfig,
    discard_off_front,
    fetch,
    model_artifact,
    open_store,
)
from edgetune.search.config import load_config
from edgetune.search.front import front_of, search_front

from helpers import run_study, tiny_config, write_config

SPACE = {"pruning": {"methods": ["none", "structured"],
                     "structured": {"layers_dropped": {"low": 1, "high": 1}}},
         "recovery": {"steps": {"low": 10, "high": 10}},
         "quantization": {"schemes": ["dynamic", "none"]}}


def study_at(run_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{run_dir / 'study.db'}")


def stored_models(study: optuna.Study, store_folder: Path) -> set[int]:
    """Trials whose model file is in the store."""
    store = optuna.artifacts.FileSystemArtifactStore(store_folder)
    held = set()
    for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        meta = model_artifact(study, trial)
        if meta is not None and fetch(store, meta, store_folder.parent / f"check-{trial.number}"):
            held.add(trial.number)
    return held


def test_keep_front_leaves_the_front_and_the_reference_in_a_configured_folder(
        tmp_path: Path, tiny_model: Path, tiny_csv: Path) -> None:
    config = tiny_config(tiny_model, tiny_csv, space=SPACE,
                         artifacts={"store": "../shared-store", "keep": "front"})
    run_dir = run_study(tmp_path / "study", config, trials=3)
    study = study_at(run_dir)
    shared = tmp_path / "shared-store"  # relative to the config's folder
    assert not (run_dir / "artifacts").exists()
    kept = {t.number for t in [*search_front(study), *front_of(study)]} | {0}
    assert stored_models(study, shared) == kept
    assert len(list(shared.iterdir())) == len(kept)


def test_discarding_removes_exactly_the_dominated_models_but_the_references(
        tmp_path: Path) -> None:
    store = open_store(ArtifactsConfig(), tmp_path / "store", create=True)
    study = optuna.create_study(directions=["maximize", "minimize"])
    model = tmp_path / "model.onnx"
    model.write_bytes(b"onnx")
    values = {"reference": [0.90, 30.0], "fast": [0.85, 5.0], "dominated": [0.84, 8.0],
              "accurate": [0.95, 20.0]}
    for role, objectives in values.items():
        trial = study.ask()
        trial.set_user_attr("role", role)
        upload_artifact(artifact_store=store, file_path=str(model), study_or_trial=trial)
        study.tell(trial, objectives)
    assert discard_off_front(study, store) == 1
    assert stored_models(study, tmp_path / "store") == {0, 1, 3}  # the reference is dominated too


def test_keep_none_uploads_nothing(tmp_path: Path, tiny_model: Path, tiny_csv: Path) -> None:
    config = tiny_config(tiny_model, tiny_csv, space=SPACE, artifacts={"keep": "none"})
    run_dir = run_study(tmp_path, config, trials=1)
    study = study_at(run_dir)
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE
    assert model_artifact(study, study.trials[0]) is None
    assert not (run_dir / "artifacts").exists()


def test_where_models_are_kept_does_not_change_the_study(tmp_path: Path, tiny_model: Path,
                                                         tiny_csv: Path) -> None:
    plain = load_config(write_config(tmp_path, tiny_config(tiny_model, tiny_csv), "a.yaml"))
    moved = load_config(write_config(tmp_path, tiny_config(
        tiny_model, tiny_csv, artifacts={"store": "s3://bucket/runs", "keep": "front"}), "b.yaml"))
    assert plain.fingerprint() == moved.fingerprint()


@pytest.mark.parametrize("store", ["gs://bucket/x", "s3:///no-bucket"])
def test_a_store_must_be_a_folder_or_s3(tmp_path: Path, tiny_model: Path, tiny_csv: Path,
                                        store: str) -> None:
    path = write_config(tmp_path, tiny_config(tiny_model, tiny_csv, artifacts={"store": store}))
    with pytest.raises(InputError) as error:
        load_config(path)
    assert error.value.where == "artifacts.store"


def test_an_s3_store_keeps_models_under_its_prefix(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    moto = pytest.importorskip("moto")
    boto3 = pytest.importorskip("boto3")
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)  # moto's fake account; nothing leaves this process
    model = tmp_path / "model.onnx"
    model.write_bytes(b"onnx bytes")
    with moto.mock_aws():
        boto3.client("s3").create_bucket(Bucket="models")
        store = open_store(ArtifactsConfig(store="s3://models/studies/tiny"), tmp_path)
        study = optuna.create_study(directions=["maximize", "minimize"])
        trial = study.ask()
        upload_artifact(artifact_store=store, file_path=str(model), study_or_trial=trial)
        study.tell(trial, [0.9, 1.0])
        meta = model_artifact(study, study.trials[0])
        assert meta is not None
        keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="models")["Contents"]]
        assert keys == [f"studies/tiny/{meta.artifact_id}"]
        assert fetch(store, meta, tmp_path / "fetched.onnx")
        assert (tmp_path / "fetched.onnx").read_bytes() == b"onnx bytes"
        store.remove(meta.artifact_id)
        assert not fetch(store, meta, tmp_path / "gone.onnx")
        assert not (tmp_path / "gone.onnx").exists()
