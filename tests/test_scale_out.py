"""Several ``edgetune run`` workers share one study through Optuna's database storage.

No scheduler of edgetune's own: three real worker processes on a real PostgreSQL server take
trials from one study until it holds its budget, exactly, and every candidate they stored loads.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import onnxruntime as ort
import optuna
import pytest
import sqlalchemy
from click.testing import CliRunner
from optuna.artifacts import FileSystemArtifactStore, download_artifact, get_all_artifact_meta
from optuna.trial import TrialState

from edgetune.search.cli import cli
from edgetune.search.config import StudyConfig
from edgetune.search.lock import StudyLock
from edgetune.search.repeats import is_repeat
from edgetune.search.study import engine_url, make_storage, open_study

from helpers import edgetune_command, output, start, tiny_config, write_config

WORKERS = 3
BUDGET = 7


@pytest.fixture(scope="module")
def shared_study(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, tiny_csv: Path,
                 postgres_url: str) -> tuple[optuna.Study, Path, list[tuple[int, str]]]:
    folder = tmp_path_factory.mktemp("scale-out")
    config = write_config(folder, tiny_config(
        tiny_model, tiny_csv, study="scale-out",
        space={"pruning": {"methods": ["none", "unstructured"]},
               "recovery": {"steps": {"low": 10, "high": 10}},
               "quantization": {"schemes": ["none", "dynamic"]}},
        search={"trials": BUDGET, "enqueue": [{"pruning.method": "none",
                                                "quantization.scheme": "none",
                                                "graph.fusion": True}]},
    ))
    command = edgetune_command("run", config, "--storage", postgres_url,
                               "--run-dir", folder / "shared")
    workers = [start(command, folder / "logs", f"worker-{i}") for i in range(WORKERS)]
    results = []
    for i, worker in enumerate(workers):
        worker.wait(timeout=900)
        results.append((worker.returncode, output(folder / "logs", f"worker-{i}")[1]))
    study = optuna.load_study(study_name="scale-out", storage=make_storage(postgres_url))
    return study, folder / "shared", results


def measured_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.trials if not is_repeat(t)]


@pytest.mark.postgres
def test_workers_complete_exactly_the_budget(shared_study) -> None:  # type: ignore[no-untyped-def]
    study, _, results = shared_study
    for code, stderr in results:
        assert code == 0, stderr[-3000:]
    # the budget counts candidates measured; a recipe sampled again is pruned unbuilt, uncounted
    states = Counter(t.state for t in measured_trials(study))
    assert states == {TrialState.COMPLETE: BUDGET}, states
    assert all(t.state == TrialState.PRUNED for t in study.trials if is_repeat(t))
    assert [t.number for t in study.trials] == list(range(len(study.trials)))


@pytest.mark.postgres
def test_reference_and_baselines_are_enqueued_once(shared_study) -> None:  # type: ignore[no-untyped-def]
    study, _, _ = shared_study
    roles = Counter((t.user_attrs.get("role"), t.user_attrs.get("baseline")) for t in study.trials)
    assert roles[("reference", None)] == 1
    assert roles[("baseline", "dynamic INT8")] == 1
    assert roles[("baseline", "fusion + dynamic INT8")] == 1
    assert roles[("enqueued", None)] == 1


@pytest.mark.postgres
def test_workers_share_the_trials_and_each_trial_records_its_machine(shared_study) -> None:  # type: ignore[no-untyped-def]
    study, _, _ = shared_study
    measured = measured_trials(study)
    pids = Counter(t.user_attrs["worker"]["pid"] for t in measured)
    assert len(pids) >= 2, pids  # the workers shared the trials with no scheduler of ours
    assert all(t.user_attrs["machine"]["host"] for t in measured)
    latencies = {t.user_attrs["measurement"]["latency_ms"] / t.user_attrs["measurement"]["ratio"]
                 for t in measured}
    assert max(latencies) == pytest.approx(min(latencies))  # one reference latency for all


@pytest.mark.postgres
def test_every_candidate_is_stored_and_loads(shared_study, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    study, shared, _ = shared_study
    store = FileSystemArtifactStore(str(shared / "artifacts"))
    for trial in measured_trials(study):
        [meta] = get_all_artifact_meta(trial, storage=study._storage)  # noqa: SLF001
        path = tmp_path / f"{trial.number}.onnx"
        download_artifact(artifact_store=store, artifact_id=meta.artifact_id, file_path=str(path))
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [o.name for o in session.get_outputs()] == ["logits"]


def _first_start_race(storage_url: str, config: StudyConfig) -> optuna.Study:
    """Four workers open one new study at the same instant, each with its own storage and lock."""
    make_storage(storage_url)  # the tables exist, as after any earlier study in this storage
    barrier = threading.Barrier(4, timeout=60)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            storage = make_storage(storage_url)
            lock = StudyLock(storage_url, config.study)
            barrier.wait()
            open_study(config, config.study, storage, setup_lock=lock)
            lock.close()
        except BaseException as error:  # re-raised in the test's thread
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    if errors:
        raise errors[0]
    return optuna.load_study(study_name=config.study, storage=make_storage(storage_url))


DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.mark.parametrize("database", DATABASES)
def test_workers_starting_together_set_the_study_up_once(
        database: str, request: pytest.FixtureRequest, tmp_path: Path, tiny_model: Path,
        tiny_csv: Path) -> None:
    url = (request.getfixturevalue("postgres_url") if database == "postgres"
           else f"sqlite:///{tmp_path / 'study.db'}")
    config = StudyConfig.model_validate(tiny_config(tiny_model, tiny_csv,
                                                    study=f"first-start-{tmp_path.name}"))
    study = _first_start_race(url, config)
    roles = [t.user_attrs.get("role") for t in study.trials]
    assert roles == ["reference", "baseline", "baseline"]


def test_status_says_when_the_front_mixes_machines(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=url, study_name="mixed",
                                directions=["maximize", "minimize"])
    for accuracy, latency, cpu in [(0.9, 10.0, "CPU A"), (0.8, 5.0, "CPU B")]:
        study.add_trial(optuna.trial.create_trial(
            values=[accuracy, latency],
            user_attrs={"machine": {"cpu": cpu, "cores": 2, "threads": 2, "onnxruntime": "1"},
                        "measurement": {"ratio": 1.0, "size_mb": 1.0}}))
    result = CliRunner().invoke(cli, ["status", "--storage", url, "--study", "mixed"],
                                catch_exceptions=False)
    assert "latencies measured on 2 kinds of machine (CPU A" in " ".join(result.stderr.split())


def fresh_database(postgres_url: str, name: str) -> str:
    """An empty database on the test server: what workers meet on their very first start."""
    engine = sqlalchemy.create_engine(engine_url(postgres_url), poolclass=sqlalchemy.NullPool)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    return postgres_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.mark.parametrize("database", DATABASES)
def test_workers_opening_a_new_database_together_all_get_in(
        database: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    url = (fresh_database(request.getfixturevalue("postgres_url"), f"fresh_{tmp_path.name}")
           if database == "postgres" else f"sqlite:///{tmp_path / 'study.db'}")
    barrier = threading.Barrier(4, timeout=60)
    errors: list[BaseException] = []

    def worker() -> None:
        barrier.wait()
        try:
            make_storage(url)
        except BaseException as error:  # re-raised in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []


def test_a_report_is_written_while_other_workers_finish_trials() -> None:
    """The first worker to finish writes the report while the others still complete trials."""
    from edgetune.reports import analysis
    from edgetune.reports.data import trials_frame

    study = optuna.create_study(directions=["maximize", "minimize"])
    for accuracy, latency in [(0.9, 10.0), (0.8, 5.0)]:
        study.add_trial(optuna.trial.create_trial(values=[accuracy, latency]))
    snapshot = trials_frame(study)
    study.add_trial(optuna.trial.create_trial(values=[0.95, 4.0]))  # another worker, meanwhile
    hypervolume = analysis.hypervolume(study, snapshot, labels=3)
    assert hypervolume is not None and list(hypervolume.frame["trial"]) == [0, 1]
