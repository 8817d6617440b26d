"""`export --pick` chooses the sweet spot of the front within the user's limits, and says why."""

from __future__ import annotations

import optuna
import pytest

from edgetune.errors import InputError
from edgetune.search.constraints import Constraints
from edgetune.search.pick import limits, pick

# (role, validation accuracy, latency ms); all four are on the front.
TRIALS = [("reference", 0.95, 10.0), ("slim", 0.93, 4.0), ("int8", 0.94, 6.0),
          ("teacher", 0.96, 12.0)]


def study_of(trials=TRIALS, confirmed: dict[int, dict] | None = None) -> optuna.Study:
    study = optuna.create_study(directions=["maximize", "minimize"])
    for number, (role, accuracy, latency_ms) in enumerate(trials):
        attrs = {"role": role, "recipe_short": role,
                 "measurement": {"ratio": latency_ms / 10.0, "size_mb": 20.0 + number}}
        if confirmed and number in confirmed:
            attrs["confirmed"] = confirmed[number]
        study.add_trial(optuna.trial.create_trial(values=[accuracy, latency_ms],
                                                  user_attrs=attrs))
    return study


def test_fastest_without_limits_is_the_fastest_front_trial() -> None:
    assert pick(study_of(), "fastest", Constraints()).trial == 1


def test_an_accuracy_drop_is_measured_from_the_fp32_reference() -> None:
    choice = pick(study_of(), "fastest", Constraints(max_accuracy_drop=0.01))
    assert choice.trial == 2  # 0.94 is exactly 1 point below 0.95; 0.93 is not within
    assert "within ≥ 94.00% accuracy (FP32 reference 95.00% - 0.01)" in choice.reason
    assert "#1 accuracy 93.00% < 94.00%" in choice.reason


def test_the_drop_and_the_reason_are_in_the_studys_metric() -> None:
    study = study_of()
    study.set_metric_names(["macro_f1", "latency_ms"])
    choice = pick(study, "fastest", Constraints(max_accuracy_drop=0.01))
    assert choice.trial == 2
    assert "within ≥ 94.00% macro_f1 (FP32 reference 95.00% - 0.01)" in choice.reason
    assert "validation macro_f1 94.00%" in choice.reason
    assert "#1 macro_f1 93.00% < 94.00%" in choice.reason


def test_most_accurate_within_a_latency_limit() -> None:
    assert pick(study_of(), "most-accurate", Constraints()).trial == 3
    choice = pick(study_of(), "most-accurate", Constraints(max_latency_ms=11))
    assert choice.trial == 0
    assert "#3 12.00 ms > 11 ms" in choice.reason


def test_limits_default_to_the_study_constraints() -> None:
    stored = Constraints(max_accuracy_drop=0.01, max_size_mb=21.5)
    choice = pick(study_of(), "fastest", limits(stored, None, None))
    assert choice.trial == 0  # trial 2 is accurate enough but 22 MB
    assert pick(study_of(), "fastest", limits(stored, 0.02, None)).trial == 1  # a flag overrides


def test_confirmed_figures_replace_the_trial_figures() -> None:
    confirmed = {
        0: {"latency_ms": 10.5, "ratio": 1.0, "on_front": True},
        1: {"latency_ms": 7.0, "ratio": 0.67, "on_front": False},  # moved off on re-measurement
        2: {"latency_ms": 5.5, "ratio": 0.52, "on_front": True},
    }  # trial 3 finished after the confirmation: its own figures stand
    study = study_of(confirmed=confirmed)
    choice = pick(study, "fastest", Constraints())
    assert choice.trial == 2
    assert "5.50 ms (0.52x FP32, confirmed)" in choice.reason
    assert "(3 of 3 qualify)" in choice.reason
    choice = pick(study, "most-accurate", Constraints())
    assert choice.trial == 3 and "12.00 ms (1.20x FP32)" in choice.reason


def test_no_trial_within_the_limits_is_an_error_naming_each() -> None:
    with pytest.raises(InputError) as error:
        pick(study_of(), "fastest", Constraints(max_accuracy_drop=0.0, max_latency_ms=9))
    assert error.value.where == "--pick"
    for excluded in ("#0 10.00 ms > 9 ms", "#1 accuracy 93.00% < 95.00%", "#3 12.00 ms > 9 ms"):
        assert excluded in error.value.message


def test_an_accuracy_drop_needs_the_reference() -> None:
    study = study_of(trials=[("baseline", 0.9, 5.0)])
    with pytest.raises(InputError) as error:
        pick(study, "fastest", Constraints(max_accuracy_drop=0.01))
    assert error.value.where == "--max-accuracy-drop"
