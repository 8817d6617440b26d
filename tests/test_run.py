"""`edgetune run` turns a config into a Pareto front; running it again resumes, never restarts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner

from edgetune.search.cli import cli
from edgetune.search.front import front_of
from edgetune.search.repeats import is_repeat

from helpers import tiny_config, write_config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path,
                 tiny_csv: Path) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("run")
    config = write_config(folder, tiny_config(
        tiny_model, tiny_csv,
        space={"pruning": {"methods": ["none", "structured"],
                           "structured": {"layers_dropped": {"low": 0, "high": 1}}},
               "recovery": {"steps": {"low": 10, "high": 10}},
               "quantization": {"schemes": ["dynamic", "none"]}},
    ))
    result = CliRunner().invoke(
        cli, ["run", str(config), "--trials", "4", "--run-dir", str(folder / "run"), "--json"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return folder, json.loads(result.stdout)


def study_of(folder: Path) -> optuna.Study:
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder / 'run' / 'study.db'}")


def test_trial_0_is_the_fp32_reference(finished_run: tuple[Path, dict]) -> None:
    study = study_of(finished_run[0])
    first = study.trials[0]
    assert first.user_attrs["role"] == "reference"
    assert first.user_attrs["recipe_short"] == "fp32 reference"
    assert study.metric_names == ["accuracy", "latency_ms"]


def test_front_is_printed_as_json(finished_run: tuple[Path, dict]) -> None:
    folder, output = finished_run
    study = study_of(folder)
    assert output["study"] == "tiny"
    assert {row["trial"] for row in output["front"]} == {t.number for t in front_of(study)}
    for row in output["front"]:
        assert set(row) >= {"trial", "recipe", "accuracy", "latency_ms", "ratio"}


def test_trials_record_recipe_measurement_and_stage_times(finished_run: tuple[Path, dict]) -> None:
    study = study_of(finished_run[0])
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4
    for trial in complete:
        measurement = trial.user_attrs["measurement"]
        assert 0 <= trial.values[0] <= 1 and trial.values[1] > 0
        assert measurement["ratio"] == pytest.approx(trial.values[1] / study.user_attrs[
            "reference_latency_ms"])
        assert "measure" in trial.user_attrs["stage_seconds"]
        assert trial.user_attrs["machine"]["threads"] == 1
    assert study.user_attrs["data"]["sizes"]["validation"] == 45


def test_the_run_ends_by_confirming_its_front(finished_run: tuple[Path, dict]) -> None:
    folder, output = finished_run
    study = study_of(folder)
    confirmed = study.user_attrs["confirmation"]["trials"]
    assert {t.number for t in study.best_trials} <= set(confirmed)
    for number in confirmed:
        figures = study.trials[number].user_attrs["confirmed"]
        assert (figures["test_accuracy"] is not None) == figures["on_front"]
    assert {row["trial"] for row in output["confirmed_front"]} == {
        n for n in confirmed if study.trials[n].user_attrs["confirmed"]["on_front"]}


def test_a_run_that_adds_nothing_keeps_the_confirmation(finished_run: tuple[Path, dict]) -> None:
    folder, _ = finished_run
    before = study_of(folder).user_attrs["confirmation"]
    finished = len(study_of(folder).trials)
    result = CliRunner().invoke(cli, ["run", str(folder / "study.yaml"), "--run-dir",
                                      str(folder / "run"), "--trials", str(finished)])
    assert result.exit_code == 0
    assert study_of(folder).user_attrs["confirmation"] == before


def test_running_again_resumes_up_to_the_budget(finished_run: tuple[Path, dict]) -> None:
    folder, _ = finished_run
    before = [t.number for t in study_of(folder).trials]
    args = ["run", str(folder / "study.yaml"), "--run-dir", str(folder / "run")]
    result = CliRunner().invoke(cli, [*args, "--trials", "4"], catch_exceptions=False)
    assert result.exit_code == 0
    assert [t.number for t in study_of(folder).trials] == before  # nothing new, nothing redone
    result = CliRunner().invoke(cli, [*args, "--trials", "5"], catch_exceptions=False)
    assert result.exit_code == 0
    new = [t for t in study_of(folder).trials if t.number not in before]
    # the budget counts candidates measured: one more, after any repeats the sampler proposed
    assert [t.state for t in new if not is_repeat(t)] == [optuna.trial.TrialState.COMPLETE]
    assert all(t.state == optuna.trial.TrialState.PRUNED for t in new if is_repeat(t))


def test_status_shows_the_same_front(finished_run: tuple[Path, dict]) -> None:
    folder, _ = finished_run
    result = CliRunner().invoke(cli, ["status", "--run-dir", str(folder / "run"), "--study", "tiny",
                                      "--json"], catch_exceptions=False)
    assert result.exit_code == 0
    status = json.loads(result.stdout)
    assert {r["trial"] for r in status["front"]} == {t.number for t in front_of(study_of(folder))}
    assert status["trials"]["complete"] >= 4


def test_a_run_folder_names_its_only_study(finished_run: tuple[Path, dict]) -> None:
    # `run --run-dir DIR` keeps the config's study name ("tiny"), not the folder's ("run")
    folder, _ = finished_run
    named = CliRunner().invoke(cli, ["status", "--run-dir", str(folder / "run"), "--study", "tiny",
                                     "--json"], catch_exceptions=False)
    unnamed = CliRunner().invoke(cli, ["status", "--run-dir", str(folder / "run"), "--json"],
                                 catch_exceptions=False)
    assert unnamed.exit_code == 0, unnamed.output
    assert json.loads(unnamed.stdout)["front"] == json.loads(named.stdout)["front"]


def test_a_changed_config_cannot_reuse_the_study(finished_run: tuple[Path, dict],
                                                 tiny_model: Path, tiny_csv: Path) -> None:
    folder, _ = finished_run
    changed = write_config(folder, tiny_config(tiny_model, tiny_csv, target={"threads": 2}),
                           name="changed.yaml")
    result = CliRunner().invoke(cli, ["run", str(changed), "--run-dir", str(folder / "run")])
    assert result.exit_code == 2
    assert "different config" in result.output


def test_isolating_on_cores_the_machine_lacks_exits_2_and_writes_nothing(
        tmp_path: Path, tiny_model: Path, tiny_csv: Path) -> None:
    config = write_config(tmp_path, tiny_config(
        tiny_model, tiny_csv, measure={"isolate": True, "cores": [4096]}))
    result = CliRunner().invoke(cli, ["run", str(config), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "measure.cores" in result.output
    assert not (tmp_path / "run").exists()


def test_an_isolated_run_measures_in_pinned_processes_and_frees_this_one(
        tmp_path: Path, tiny_model: Path, tiny_csv: Path) -> None:
    before = os.sched_getaffinity(0)
    config = write_config(tmp_path, tiny_config(
        tiny_model, tiny_csv, measure={"isolate": True, "cores": [max(before)]},
        space={"pruning": {"methods": ["none"]},  # the FP32 reference and dynamic INT8
               "quantization": {"schemes": ["none", "dynamic"],
                                "dynamic": {"per_channel": [False]}},
               "graph": {"fusion": [False]}}))
    result = CliRunner().invoke(cli, ["run", str(config), "--trials", "2", "--run-dir",
                                      str(tmp_path / "run"), "--no-report"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'run/study.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert "confirmation" in study.user_attrs
    assert os.sched_getaffinity(0) == before  # training kept off the core only while it ran
