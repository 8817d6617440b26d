"""Candidates measured on the device they ship to: ``edgetune agent`` beside ``edgetune run``.

With ``target.device`` the builder only builds; an agent of that device, in a virtual environment
without torch, times each candidate beside the FP32 reference, scores it and writes the figures
back through the study's database. An agent killed mid-measurement costs nothing: the next agent
of the device measures the trial, and no trial is lost or counted twice. Agents of other devices
record a front of their own on the same trials.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from click.testing import CliRunner
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.trial import TrialState

from edgetune.objectives.accuracy import accuracy, scored
from edgetune.objectives.target import TargetConfig
from edgetune.search.agent import ARTIFACT_STORE, Agent, publish_inputs
from edgetune.search.cli import cli
from edgetune.search.constraints import Constraints
from edgetune.search.pick import pick
from edgetune.search.record import CLAIM_PREFIX, DEVICE_PREFIX, ROLE, device_figures
from edgetune.search.study import make_storage

from helpers import edgetune_command, output, start, tiny_config, trials_of, wait_for, write_config

REPO = Path(__file__).resolve().parents[1]
BUDGET = 4


def device_config(model: Path, data: Path, study: str, device: str,
                  **measure: object) -> dict[str, object]:
    return tiny_config(
        model, data, study=study, target={"device": device},
        measure={"warmup": 2, "rounds": 2, "max_rounds": 2, "runs": 5, "inputs": 2, **measure},
        space={"pruning": {"methods": ["none", "unstructured"]},
               "recovery": {"steps": {"low": 10, "high": 10}},
               "quantization": {"schemes": ["none", "dynamic"]}},
        search={"trials": BUDGET})


@pytest.fixture(scope="module")
def agent_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment as a device gets it: ``requirements-agent.txt`` and edgetune
    without its dependencies, so no torch, transformers or NNCF."""
    venv = tmp_path_factory.mktemp("agent") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "-r", str(REPO / "requirements-agent.txt")], check=True)
    subprocess.run([*pip, "--no-deps", str(REPO)], check=True, cwd=venv.parent)
    return venv / "bin" / "python"


def agent_command(python: Path, study: str, device: str, *args: object) -> list[str]:
    """The agent's command line in its own environment (run it outside the repository, whose
    ``edgetune`` folder would shadow the installed package)."""
    return [str(python), "-m", "edgetune", "agent", "--study", study, "--device", device,
            *map(str, args)]


def test_the_agents_environment_has_no_torch(agent_python: Path) -> None:
    found = subprocess.run(
        [str(agent_python), "-c", "import importlib.util as u; print([m for m in "
         "('torch', 'transformers', 'nncf', 'optimum') if u.find_spec(m)])"],
        capture_output=True, text=True, check=True).stdout.strip()
    assert found == "[]"


def test_a_device_study_is_measured_by_its_agent_which_survives_kill_9_and_a_second_device(
        tmp_path: Path, tiny_model: Path, tiny_csv: Path, postgres_url: str,
        agent_python: Path) -> None:
    """The builder pinned to one core, the torch-free agent to the other, on PostgreSQL."""
    # Enough rounds that a measurement lasts long enough to be killed in the middle of.
    config = write_config(tmp_path, device_config(tiny_model, tiny_csv, "on-device", "board",
                                                  rounds=300, max_rounds=300, runs=10))
    environment = {**os.environ, "EDGETUNE_STORAGE": postgres_url}
    logs = tmp_path / "logs"
    builder = start(["taskset", "-c", "0", *edgetune_command(
        "run", config, "--storage", postgres_url, "--run-dir", tmp_path / "run",
        "--no-report")], logs, "builder")
    first = start(agent_command(agent_python, "on-device", "board", "--cores", "1", "--grace",
                                "6"), logs, "agent-1", env=environment, cwd=tmp_path)

    def claimed_not_measured() -> optuna.trial.FrozenTrial | None:
        return next((t for t in trials_of(postgres_url, "on-device")
                     if CLAIM_PREFIX + "board" in t.user_attrs
                     and DEVICE_PREFIX + "board" not in t.user_attrs), None)

    victim = wait_for(claimed_not_measured, "the agent's first claim", timeout=300,
                      process=first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    second = start(agent_command(agent_python, "on-device", "board", "--cores", "1"), logs,
                   "agent-2", env=environment, cwd=tmp_path)
    builder.wait(timeout=600)
    second.terminate()
    second.wait(timeout=60)
    assert builder.returncode == 0, output(logs, "builder")

    trials = trials_of(postgres_url, "on-device")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * BUDGET
    for trial in trials:
        figures = device_figures(trial, "board")
        assert figures is not None and figures.measurement is not None
        assert trial.values[0] == figures.measurement["accuracy"]  # the device's accuracy
        assert trial.user_attrs["machine"]["device"] == "board"
        assert "measure" not in trial.user_attrs["stage_seconds"]  # the builder never measured
    retaken = device_figures(next(t for t in trials if t.number == victim.number), "board")
    assert retaken is not None and retaken.agent["pid"] == second.pid

    # A second device records its own figures on the same trials: a front of its own.
    other = subprocess.run(agent_command(agent_python, "on-device", "two-threads", "--threads",
                                         "2", "--idle-exit", "3"),
                           env=environment, capture_output=True, text=True, timeout=300,
                           cwd=tmp_path)
    assert other.returncode == 0, other.stderr
    shown = CliRunner().invoke(cli, ["status", "--storage", postgres_url, "--study", "on-device",
                                     "--json"])
    assert shown.exit_code == 0, shown.output
    status = json.loads(shown.stdout)
    assert status["front"] and all(row["machine"].startswith("board: ")
                                   for row in status["front"])
    assert list(status["devices"]) == ["two-threads"]
    assert status["devices"]["two-threads"]
    assert all(row["machine"].startswith("two-threads: ") and "2 threads" in row["machine"]
               for row in status["devices"]["two-threads"])
    study = optuna.load_study(study_name="on-device", storage=make_storage(postgres_url))
    picked = pick(study, "fastest", Constraints(), device="two-threads")
    fastest = min(status["devices"]["two-threads"], key=lambda row: row["latency_ms"])
    assert picked.trial == fastest["trial"]
    report = tmp_path / "report.html"
    written = CliRunner().invoke(cli, ["report", "--storage", postgres_url, "--study",
                                       "on-device", "--out", str(report)])
    assert written.exit_code == 0, written.output
    assert "Pareto front on device two-threads" in report.read_text()


def test_without_an_agent_run_says_so_and_stops_at_its_timeout(
        tmp_path: Path, tiny_model: Path, tiny_csv: Path) -> None:
    config = write_config(tmp_path, device_config(tiny_model, tiny_csv, "alone", "nobody"))
    result = subprocess.run(edgetune_command("run", config, "--run-dir", tmp_path / "run",
                                             "--timeout", "35", "--no-report"),
                            capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr
    assert "no agent of device 'nobody' is running" in result.stderr
    started = [t for t in trials_of(f"sqlite:///{tmp_path / 'run' / 'study.db'}", "alone")
               if t.state != TrialState.WAITING]  # the baselines not reached stay enqueued
    assert started and all(t.state == TrialState.FAIL for t in started)
    assert all("waited for device 'nobody'" in t.user_attrs["failure"]["error"]
               for t in started)


def study_for_an_agent(tmp_path: Path, name: str, reference_model: Path,
                       inputs: dict[str, np.ndarray], labels: np.ndarray,
                       task: dict[str, object] | None = None,
                       ) -> tuple[str, optuna.Study, FileSystemArtifactStore]:
    """A study as a device builder leaves it: its settings, the published inputs and a complete
    reference trial's model; its storage URL, the study and its artifact store."""
    storage_url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name=name, storage=make_storage(storage_url),
                                directions=["maximize", "minimize"])
    (tmp_path / "artifacts").mkdir()
    store = FileSystemArtifactStore(str(tmp_path / "artifacts"))
    study.set_user_attr("config", {**({"task": task} if task else {}),
                                   "target": {"threads": 1, "sequence_length": 16},
                                   "measure": {"warmup": 1, "rounds": 2, "max_rounds": 2}})
    study.set_user_attr(ARTIFACT_STORE, str(tmp_path / "artifacts"))
    publish_inputs(study, store, inputs, labels, tmp_path / "work")
    reference = study.ask()
    reference.set_user_attr(ROLE, "reference")
    upload_artifact(artifact_store=store, file_path=str(reference_model), study_or_trial=reference)
    return storage_url, study, store


def test_a_model_the_device_cannot_load_is_recorded_as_its_error(
        tmp_path: Path, tiny_onnx: Path) -> None:
    rows = 6
    inputs = {"input_ids": np.full((rows, 16), 5, dtype=np.int64),
              "attention_mask": np.ones((rows, 16), dtype=np.int64),
              "token_type_ids": np.zeros((rows, 16), dtype=np.int64)}
    storage_url, study, store = study_for_an_agent(tmp_path, "broken", tiny_onnx, inputs,
                                                   np.zeros(rows, dtype=np.int64))
    broken = study.ask()
    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(b"not a model")
    upload_artifact(artifact_store=store, file_path=str(garbage), study_or_trial=broken)

    agent = Agent(storage_url, "broken", "board", ["onnxruntime"], log=lambda line: None)
    try:
        assert agent.serve(idle_exit=3) == 2
    finally:
        agent.close()
    trials = optuna.load_study(study_name="broken", storage=make_storage(storage_url)).trials
    measured, failed = (device_figures(t, "board") for t in trials)
    assert measured is not None and measured.measurement is not None
    assert measured.measurement["accuracy"] == accuracy(  # as a trial here would score it
        tiny_onnx, inputs, np.zeros(rows, dtype=np.int64), TargetConfig(threads=1,
                                                                         sequence_length=16))
    assert failed is not None and failed.measurement is None
    assert failed.error is not None and failed.error["stage"] == "device"
    assert "INVALID_PROTOBUF" in failed.error["error"] or "protobuf" in failed.error[
        "error"].lower()


def test_an_agent_scores_the_studys_metric_as_a_trial_here_would(
        tmp_path: Path, tiny_onnx: Path) -> None:
    """The device reads ``task.metric`` from the study and the label names from its data."""
    rng = np.random.default_rng(0)
    rows = 12
    inputs = {"input_ids": rng.integers(1, 40, size=(rows, 16), dtype=np.int64),
              "attention_mask": np.ones((rows, 16), dtype=np.int64),
              "token_type_ids": np.zeros((rows, 16), dtype=np.int64)}
    labels = np.arange(rows, dtype=np.int64) % 3
    labels_named = ["politics", "sport", "tech"]
    storage_url, study, _ = study_for_an_agent(tmp_path, "recall", tiny_onnx, inputs, labels,
                                               task={"metric": "recall:sport"})
    study.set_user_attr("data", {"labels": labels_named})

    agent = Agent(storage_url, "recall", "board", ["onnxruntime"], log=lambda line: None)
    try:
        assert agent.serve(idle_exit=3) == 1
    finally:
        agent.close()
    (trial,) = optuna.load_study(study_name="recall", storage=make_storage(storage_url)).trials
    measured = device_figures(trial, "board")
    assert measured is not None and measured.measurement is not None
    here = scored(tiny_onnx, inputs, labels, TargetConfig(threads=1, sequence_length=16),
                  "recall:sport", labels_named)
    assert measured.measurement["accuracy"] == here.value
    assert measured.measurement["confusion"] == here.confusion
    assert here.value != np.trace(here.confusion) / rows  # the recall, not the accuracy


def test_a_password_on_the_agents_command_line_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["agent", "--storage",
                                      "postgresql://edgetune:secret@db.example/studies",
                                      "--study", "s", "--device", "board"])
    assert result.exit_code == 2
    assert "ps" in result.output and "EDGETUNE_STORAGE" in result.output
    assert "secret" not in result.output


def test_an_agent_waits_for_its_study_on_the_storage_the_environment_names(
        tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("EDGETUNE_STORAGE", f"sqlite:///{tmp_path / 'nothing.db'}")
    result = CliRunner().invoke(cli, ["agent", "--study", "absent", "--device", "board",
                                      "--idle-exit", "2"])
    assert result.exit_code == 0
    assert "no study 'absent' in the storage yet: waiting" in result.output
    assert "measured 0 trial(s)" in result.output


def test_a_device_study_keeps_its_models(tmp_path: Path, tiny_model: Path,
                                         tiny_csv: Path) -> None:
    config = device_config(tiny_model, tiny_csv, "keeps", "board")
    config["artifacts"] = {"keep": "none"}
    result = CliRunner().invoke(cli, ["run", str(write_config(tmp_path, config)), "--run-dir",
                                      str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "artifacts.keep" in result.output and "target.device" in result.output
    assert not (tmp_path / "run").exists()


def test_an_agent_started_before_its_builder_waits_for_the_database(tmp_path: Path) -> None:
    """On SQLite the builder creates the database file, and its folder, when it starts."""
    url = f"sqlite:///{tmp_path / 'not-yet' / 'study.db'}"
    agent = Agent(url, "later", "board", ["onnxruntime"], log=lambda line: None)
    try:
        assert agent.serve(idle_exit=2) == 0
    finally:
        agent.close()
    assert not (tmp_path / "not-yet").exists()  # the agent creates nothing of the study's
