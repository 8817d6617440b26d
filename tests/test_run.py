"""`edgetune run` turns a config into a Pareto front; running it again resumes, never restarts."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner

from edgetune.search.cli import cli
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
    assert {row["trial"] for row in output["front"]} == {t.number for t in study.best_trials}
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


def test_running_again_resumes_up_to_the_budget(finished_run: tuple[Path, dict]) -> None:
    folder, _ = finished_run
    before = [t.number for t in study_of(folder).trials]
    args = ["run", str(folder / "study.yaml"), "--run-dir", str(folder / "run")]
    result = CliRunner().invoke(cli, [*args, "--trials", "4"], catch_exceptions=False)
    assert result.exit_code == 0
    assert [t.number for t in study_of(folder).trials] == before  # nothing new, nothing redone
    result = CliRunner().invoke(cli, [*args, "--trials", "5"], catch_exceptions=False)
    assert result.exit_code == 0
    assert len(study_of(folder).trials) == len(before) + 1


def test_status_shows_the_same_front(finished_run: tuple[Path, dict]) -> None:
    folder, _ = finished_run
    result = CliRunner().invoke(cli, ["status", "--run-dir", str(folder / "run"), "--study", "tiny",
                                      "--json"], catch_exceptions=False)
    assert result.exit_code == 0
    status = json.loads(result.stdout)
    assert {r["trial"] for r in status["front"]} == {t.number for t in study_of(folder).best_trials}
    assert status["trials"]["complete"] >= 4


def test_a_changed_config_cannot_reuse_the_study(finished_run: tuple[Path, dict],
                                                 tiny_model: Path, tiny_csv: Path) -> None:
    folder, _ = finished_run
    changed = write_config(folder, tiny_config(tiny_model, tiny_csv, target={"threads": 2}),
                           name="changed.yaml")
    result = CliRunner().invoke(cli, ["run", str(changed), "--run-dir", str(folder / "run")])
    assert result.exit_code == 2
    assert "different config" in result.output
