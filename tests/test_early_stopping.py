"""A trial that can no longer meet the accuracy floor stops while it trains, and says why.

The rule is checked on scripted accuracy curves (what the checks would measure); the end-to-end
test trains a really hopeless recovery on the tiny model.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner

from edgetune.search.cli import cli
from edgetune.search.early_stopping import EarlyStopping, check_steps, forecast, noise_margin

from helpers import tiny_config, write_config


def train(stopper: EarlyStopping, curves: list[list[float]]) -> list[int]:
    """Drive ``stopper`` through its phases as the training loop does (a call after every step),
    with accuracy at the k-th check of a phase taken from ``curves[phase][k]``; return the
    steps at which it checked."""
    checked = []
    for (_, steps), curve in zip(stopper.phases, curves, strict=True):
        scripted = iter(curve)
        stopper.evaluate = lambda model: next(scripted)
        for step in range(1, steps + 1):
            before = len(stopper.checks)
            stopper(step, None)  # type: ignore[arg-type]
            if len(stopper.checks) > before:
                checked.append(step)
    return checked


def test_a_look_while_training_scores_the_task_metric(study_bench) -> None:  # type: ignore[no-untyped-def]
    """The floor is in the task metric, so the look at a model still training scores it too, as
    the trial's measurement of the exported model does."""
    from edgetune.objectives.accuracy import scored
    from edgetune.objectives.training import torch_score

    task = replace(study_bench.task, config=study_bench.task.config.model_copy(
        update={"metric": "recall:tech"}))
    model = study_bench.load(study_bench.base).eval()
    exported = scored(study_bench.reference(), task.encoded("validation"),
                      task.labels("validation"), study_bench.target, "recall:tech",
                      task.label_names)
    assert torch_score(model, task) == exported.value
    assert torch_score(model, study_bench.task) != exported.value  # accuracy differs here


def test_checks_fall_at_quarters_of_each_phase() -> None:
    assert check_steps(100) == {25, 50, 75}
    assert check_steps(10) == {2, 5, 8}
    assert check_steps(2) == {1}  # never after the last step: the measurement follows anyway


def test_forecast_keeps_the_fastest_gain_for_every_step_left() -> None:
    assert forecast([(25, 0.60)], 75) is None  # one check: no rate yet
    assert forecast([(25, 0.60), (50, 0.70), (75, 0.72)], 25) == pytest.approx(0.72 + 0.4 * 0.25)
    assert forecast([(25, 0.80), (50, 0.78)], 50) == pytest.approx(0.80)  # never below the best


def test_a_hopeless_recovery_stops_at_its_second_check() -> None:
    stopper = EarlyStopping(0.95, [("recovery", 100)], evaluate=lambda model: 0.0)
    with pytest.raises(optuna.TrialPruned, match="below the floor 95.00%"):
        train(stopper, [[0.60, 0.70, 0.74]])
    assert [(c.step, c.accuracy) for c in stopper.checks] == [(25, 0.60), (50, 0.70)]
    assert stopper.checks[-1].forecast == pytest.approx(0.70 + 0.4 / 100 * 50)
    assert stopper.reason and "recovery step 50/100" in stopper.reason


def test_a_recovery_still_climbing_fast_enough_is_never_stopped() -> None:
    # 60 % -> 80 %: at that pace the floor is within reach of the steps left, so it trains on,
    # even though it ends below the floor (the measurement then finds it infeasible).
    stopper = EarlyStopping(0.95, [("recovery", 100)], evaluate=lambda model: 0.0)
    assert train(stopper, [[0.60, 0.80, 0.85]]) == [25, 50, 75]
    assert stopper.reason is None


def test_a_forecast_short_of_the_floor_by_less_than_the_noise_trains_on() -> None:
    # 91 % -> 92 % at half time forecasts 94 %: one point short of the floor, but a validation
    # split of 334 texts measures 95 % only to about 1.2 points.
    assert noise_margin(0.95, 334) == pytest.approx(0.0119, abs=1e-4)
    noisy = EarlyStopping(0.95, [("recovery", 100)], evaluate=lambda model: 0.0,
                          margin=noise_margin(0.95, 334))
    assert train(noisy, [[0.91, 0.92, 0.93]]) == [25, 50, 75]
    assert noisy.reason is None
    exact = EarlyStopping(0.95, [("recovery", 100)], evaluate=lambda model: 0.0)
    with pytest.raises(optuna.TrialPruned):
        train(exact, [[0.91, 0.92, 0.93]])


def test_later_training_phases_count_as_steps_left() -> None:
    # Recovery alone could not reach the floor, but QAT's 100 further steps might.
    alone = EarlyStopping(0.95, [("recovery", 100)], evaluate=lambda model: 0.0)
    with pytest.raises(optuna.TrialPruned):
        train(alone, [[0.80, 0.85, 0.86]])
    with_qat = EarlyStopping(0.95, [("recovery", 100), ("qat", 100)], evaluate=lambda model: 0.0)
    with pytest.raises(optuna.TrialPruned, match="qat step 50/100"):
        train(with_qat, [[0.80, 0.85, 0.86], [0.86, 0.86, 0.86]])
    assert [c.phase for c in with_qat.checks] == ["recovery"] * 3 + ["qat"] * 2
    # QAT's first check starts a curve of its own: no rate is carried over from recovery.
    assert with_qat.checks[3].forecast is None


def test_a_phase_within_the_noise_of_the_floor_is_not_checked_again() -> None:
    # Its forecast can no longer fall below the floor, so further checks would only cost time;
    # the next phase is checked from its own start.
    stopper = EarlyStopping(0.95, [("recovery", 100), ("qat", 40)], evaluate=lambda model: 0.0,
                            margin=0.01)
    assert train(stopper, [[0.90, 0.945], [0.90, 0.93, 0.935]]) == [25, 50, 10, 20, 30]
    assert stopper.reason is None


# Zeroing 95 % of every weight, then a recovery whose learning rate moves nothing.
HOPELESS_SPACE = {
    "pruning": {"methods": ["unstructured"],
                "unstructured": {"ratio": {"low": 0.95, "high": 0.95}}},
    "recovery": {"steps": {"low": 20, "high": 20}, "distillation": [False],
                 "learning_rate": {"low": 1.0e-9, "high": 1.0e-9}},
    "quantization": {"schemes": ["none"]}, "graph": {"fusion": [False]},
}


def run_hopeless(folder: Path, tiny_model: Path, tiny_csv: Path, **search: object) -> Path:
    config = write_config(folder, tiny_config(
        tiny_model, tiny_csv, space=HOPELESS_SPACE,
        search={"trials": 2, "constraints": {"max_accuracy_drop": 0.05}, **search}))
    run_dir = folder / "run"
    result = CliRunner().invoke(cli, ["run", str(config), "--run-dir", str(run_dir)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return run_dir


@pytest.fixture(scope="module")
def hopeless_run(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path,
                 tiny_csv: Path) -> tuple[optuna.Study, dict]:
    run_dir = run_hopeless(tmp_path_factory.mktemp("hopeless"), tiny_model, tiny_csv,
                           early_stopping=True)
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{run_dir / 'study.db'}")
    status = CliRunner().invoke(cli, ["status", "--run-dir", str(run_dir), "--study", "tiny",
                                      "--json"], catch_exceptions=False)
    return study, json.loads(status.stdout)


def test_a_hopeless_trial_is_pruned_with_its_reason(hopeless_run: tuple[optuna.Study, dict]
                                                    ) -> None:
    study, status = hopeless_run
    reference, hopeless = study.trials
    assert reference.state == optuna.trial.TrialState.COMPLETE
    assert hopeless.state == optuna.trial.TrialState.PRUNED
    floor = study.user_attrs["reference_accuracy"] - 0.05
    record = hopeless.user_attrs["early_stopping"]
    assert record["floor"] == pytest.approx(floor)
    assert [c["step"] for c in record["checks"]] == [5, 10]  # stopped at the second check
    assert all(c["accuracy"] < floor for c in record["checks"])
    assert hopeless.user_attrs["pruned"]["stage"] == "recovery"
    assert "below the floor" in hopeless.user_attrs["pruned"]["reason"]
    assert hopeless.constraints["accuracy_drop"] > 0  # samplers learn the region misses the floor
    assert "prune_recover" in hopeless.user_attrs["stage_seconds"]
    assert status["trials"] == {"complete": 1, "pruned": 1}
    assert [row["trial"] for row in status["front"]] == [0]


def test_the_report_lists_the_stopped_trial_and_why(hopeless_run: tuple[optuna.Study, dict]
                                                    ) -> None:
    from edgetune.reports.data import failures, trials_frame

    stopped = failures(trials_frame(hopeless_run[0]))
    assert list(stopped["trial"]) == [1]
    assert stopped.loc[1, "failure_stage"] == "recovery"
    assert "below the floor" in stopped.loc[1, "failure_error"]


def test_early_stopping_is_off_unless_asked_for(tmp_path: Path, tiny_model: Path, tiny_csv: Path
                                               ) -> None:
    """Off by default: the rule stopped recoveries on the default task that would have met the
    floor (benchmarks/RESULTS.md, early stopping)."""
    run_dir = run_hopeless(tmp_path, tiny_model, tiny_csv)
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{run_dir / 'study.db'}")
    hopeless = study.trials[1]
    assert hopeless.state == optuna.trial.TrialState.COMPLETE  # trained, measured, infeasible
    assert "early_stopping" not in hopeless.user_attrs
    assert hopeless.constraints["accuracy_drop"] > 0
