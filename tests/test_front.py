"""The front: feasible trials no other beats on every objective; confirmed figures replace the
search's; machines are never mixed."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
from click.testing import CliRunner

from edgetune.objectives.machine import machine_record
from edgetune.objectives.target import TargetConfig
from edgetune.reports import data
from edgetune.search.cli import cli
from edgetune.search.constraints import Constraints
from edgetune.search.front import front, front_of, non_dominated, search_front
from edgetune.search.pick import pick

from studies import HandmadeStudy, study_of, trial

SIZE_DIRECTIONS = ("maximize", "minimize", "minimize")


def confirmed(latency_ms: float, **figures: object) -> dict[str, object]:
    return {"latency_ms": latency_ms, "ratio": latency_ms / 10.0,
            "latency": {"spread": 0.01}, "test_accuracy": 0.9, **figures}


def constrained(study: optuna.Study, values: list[float], violation: float,
                **attrs: object) -> None:
    """A complete trial whose latency constraint is ``violation`` (> 0: missed)."""
    made = trial(*values[:2], **attrs)
    study.add_trial(optuna.trial.create_trial(
        values=values, user_attrs=made.user_attrs,
        system_attrs={"constraints:latency_ms": violation}))


def test_a_point_beaten_on_both_objectives_is_off_the_front() -> None:
    points = [(0.90, 10.0), (0.80, 5.0), (0.80, 6.0), (0.95, 20.0), (0.90, 10.0)]
    assert non_dominated(points) == [True, True, False, True, True]  # equal points both stay


def test_slack_keeps_points_that_a_small_latency_error_would_put_on_the_front() -> None:
    points = [(0.90, 10.0), (0.85, 10.5), (0.85, 13.0)]
    assert non_dominated(points) == [True, False, False]
    assert non_dominated(points, slack=0.10) == [True, True, False]


def test_trials_from_two_machines_get_one_front_each(tmp_path: Path, tiny_model: Path,
                                                     tiny_csv: Path, tiny_onnx: Path) -> None:
    made = HandmadeStudy(tmp_path, tiny_model, tiny_csv)
    elsewhere = {**machine_record(TargetConfig(threads=1)), "cpu": "Other CPU", "host": "other"}
    here = made.add(0.90, 10.0, tiny_onnx)
    there = made.add(0.80, 20.0, tiny_onnx, machine=elsewhere)  # beaten, but not comparable
    status = json.loads(CliRunner().invoke(cli, ["status", *made.cli_args(), "--json"]).stdout)
    machines = {row["trial"]: row["machine"] for row in status["front"]}
    assert set(machines) == {here, there}
    assert "Other CPU" in machines[there] and "Other CPU" not in machines[here]
    assert sorted(status["machines"]) == sorted(set(machines.values()))
    result = CliRunner().invoke(cli, ["status", *made.cli_args()])
    assert "latencies measured on 2 kinds of machine" in " ".join(result.stderr.split())


def test_an_infeasible_trial_is_never_on_the_front() -> None:
    study = study_of([])
    constrained(study, [0.90, 10.0], -0.1)
    constrained(study, [0.95, 5.0], 0.2)  # beats trial 0 on both, but missed the budget
    assert [t.number for t in front_of(study)] == [0] == [t.number for t in study.best_trials]
    assert [row.trial for row in front(study)] == [0]


def test_size_as_a_third_objective_keeps_a_smaller_model_on_the_front() -> None:
    assert non_dominated([(0.9, 10.0, 5.0), (0.9, 10.0, 4.0)], SIZE_DIRECTIONS) == [False, True]
    assert non_dominated([(0.9, 10.0, 5.0), (0.9, 11.0, 4.0)], SIZE_DIRECTIONS) == [True, True]
    study = optuna.create_study(directions=list(SIZE_DIRECTIONS))
    for values in ([0.9, 10.0, 5.0], [0.9, 11.0, 4.0], [0.8, 12.0, 6.0]):
        study.add_trial(optuna.trial.create_trial(values=values,
                                                  user_attrs=trial(*values[:2]).user_attrs))
    assert [t.number for t in front_of(study)] == [0, 1]
    assert {t.number for t in study.best_trials} == {0, 1}


def test_confirmed_figures_replace_the_search_figures_everywhere() -> None:
    """Trial 1 was flattered: confirmed slower, it leaves the front. Trial 2, near the front,
    confirms faster and joins it. status, the report and export all show that front."""
    study = study_of([
        trial(0.95, 10.0, role="reference", confirmed=confirmed(10.0, on_front=True)),
        trial(0.93, 4.0, confirmed=confirmed(11.0, on_front=False, moved_off_front=True)),
        trial(0.92, 4.2, confirmed=confirmed(4.1, on_front=True)),
    ])
    assert [t.number for t in search_front(study)] == [0, 1]
    assert [t.number for t in front_of(study)] == [0, 2]
    rows = {row.trial: row for row in front(study)}
    assert rows[2].confirmed and rows[2].latency_ms == 4.1 and rows[2].test_accuracy == 0.9
    shown = data.front_frame(data.trials_frame(study))
    assert dict(zip(shown["trial"], shown["on_front"])) == {0: True, 1: False, 2: True}
    assert pick(study, "fastest", Constraints()).trial == 2


def test_a_confirmed_latency_over_the_budget_makes_a_trial_infeasible() -> None:
    study = study_of([])
    constrained(study, [0.95, 10.0], -0.5)
    constrained(study, [0.93, 4.0], -0.2,
                confirmed=confirmed(6.0, constraints={"latency_ms": 0.2}))
    assert [t.number for t in search_front(study)] == [0, 1]
    assert [t.number for t in front_of(study)] == [0]
