"""A study becomes the frames the report draws: trials, the front as shown, failures, context."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from edgetune.reports import analysis, data
from edgetune.reports.context import constraints_of, export_command, hide_password
from edgetune.search.study import Location

from studies import (
    DYNAMIC,
    STRUCTURED,
    UNSTRUCTURED,
    failed,
    latency_stats,
    sampled_study,
    study_of,
    trial,
)


def confirmed(latency_ms: float, rounds: list[float], on_front: bool = True,
              test_accuracy: float = 0.9) -> dict:
    median = sorted(rounds)[len(rounds) // 2]
    return {"latency_ms": latency_ms, "ratio": latency_ms / 10.0,
            "latency": latency_stats(median, rounds), "test_accuracy": test_accuracy,
            "on_front": on_front, "moved_off_front": not on_front, "machine": {}, "date": "d"}


@pytest.fixture()
def study():
    return study_of([
        trial(0.97, 10.0, role="reference"),
        trial(0.96, 5.0, DYNAMIC, confirmed=confirmed(5.5, [5.0, 5.2, 6.0])),
        trial(0.90, 3.0, STRUCTURED, confirmed=confirmed(6.0, [6.0, 6.0, 6.0], on_front=False)),
        trial(0.95, 9.0, UNSTRUCTURED, zipped_mb=8.0),  # dominated by trial 1
        failed("quantize", "calibration ran out of memory"),
    ])


def test_every_trial_is_one_row_with_its_recipe_and_figures(study) -> None:
    trials = data.trials_frame(study)
    assert list(trials["trial"]) == [0, 1, 2, 3, 4]
    assert list(trials["state"]) == ["complete"] * 4 + ["fail"]
    assert list(trials["quantization"]) == ["none", "dynamic", "dynamic", "none", "dynamic"]
    assert list(trials["pruning"]) == ["none", "none", "structured", "unstructured", "none"]
    assert trials.loc[3, "zipped_mb"] == 8.0 and trials.loc[1, "ratio"] == pytest.approx(0.5)
    assert math.isnan(trials.loc[4, "accuracy"])  # a failure has no figures, and no error
    assert data.reference(trials)["trial"] == 0


def test_the_front_shows_confirmed_figures_and_flags_trials_that_left_it(study) -> None:
    front = data.front_frame(data.trials_frame(study))
    assert set(front["trial"]) == {t.number for t in study.best_trials} == {0, 1, 2}
    assert list(front["trial"]) == [1, 2, 0]  # fastest first, by the figures shown
    assert front.loc[1, "shown_latency_ms"] == 5.5 and front.loc[1, "shown_ratio"] == 0.55
    assert front.loc[0, "shown_latency_ms"] == 10.0  # not confirmed: the search's figure
    assert list(front["on_front"]) == [True, False, True]
    assert front.loc[2, "moved_off_front"]


def test_confirmed_error_bars_span_the_round_medians_on_the_drift_corrected_scale(study) -> None:
    row = data.trials_frame(study).loc[1]
    # rounds 5.0, 5.2, 6.0 ms around a median of 5.2; the confirmed (corrected) figure is 5.5 ms
    assert row["confirmed_low_ms"] == pytest.approx(5.5 * 5.0 / 5.2)
    assert row["confirmed_high_ms"] == pytest.approx(5.5 * 6.0 / 5.2)


def test_failures_keep_their_stage_and_reason(study) -> None:
    failures = data.failures(data.trials_frame(study))
    assert list(failures["trial"]) == [4]
    assert failures.iloc[0]["failure_stage"] == "quantize"
    assert failures.iloc[0]["failure_error"] == "calibration ran out of memory"


def test_an_empty_study_gives_empty_frames() -> None:
    trials = data.trials_frame(study_of([]))
    assert trials.empty and data.front_frame(trials).empty and data.reference(trials) is None
    assert analysis.hypervolume(study_of([]), trials) is None


def test_importances_wait_for_enough_trials() -> None:
    result = analysis.importances(sampled_study(analysis.MIN_TRIALS_FOR_IMPORTANCE - 1))
    assert result.frame is None
    assert f"this study has {analysis.MIN_TRIALS_FOR_IMPORTANCE - 1}" in result.note


def test_importances_give_each_objective_a_share_per_sampled_parameter() -> None:
    study = sampled_study(16)
    result = analysis.importances(study)
    assert list(result.frame.columns) == ["accuracy", "latency_ms"]
    assert set(result.frame.index) <= {name for t in study.trials for name in t.params}
    assert "quantization.scheme" in result.frame.index
    assert result.frame.sum().tolist() == pytest.approx([1.0, 1.0])


def test_hypervolume_is_measured_from_chance_accuracy_and_the_fp32_latency() -> None:
    study = sampled_study(10)
    trials = data.trials_frame(study)
    result = analysis.hypervolume(study, trials, labels=4)
    done = data.complete(trials)
    assert result.reference_point == (0.25, 10.0)
    assert list(result.frame["trial"]) == list(done["trial"])
    assert result.frame["hypervolume"].is_monotonic_increasing
    assert (result.frame["minutes"] >= 0).all()
    # The last value is the area the final front dominates, computed independently here.
    front = sorted((lat, acc) for acc, lat in (t.values for t in study.best_trials) if lat <= 10.0)
    floor, budget = result.reference_point
    area, best = 0.0, floor
    for (latency, accuracy), (next_latency, _) in zip(front, front[1:] + [(budget, None)]):
        best = max(best, accuracy)
        area += (best - floor) * (next_latency - latency)
    assert result.frame["hypervolume"].iloc[-1] == pytest.approx(area)


def test_importances_and_hypervolume_name_the_studys_metric() -> None:
    study = sampled_study(16)
    study.set_metric_names(["macro_f1", "latency_ms"])
    assert list(analysis.importances(study).frame.columns) == ["macro_f1", "latency_ms"]
    result = analysis.hypervolume(study, data.trials_frame(study), labels=4)
    assert result.metric == "macro_f1"
    assert result.explanation.startswith("Reference point: macro_f1 25.00% (chance among 4 ")


def test_without_labels_the_worst_accuracy_is_the_hypervolume_floor() -> None:
    study = sampled_study(4)
    trials = data.trials_frame(study)
    floor, _ = analysis.hypervolume(study, trials).reference_point
    assert floor == data.complete(trials)["accuracy"].min()


def test_constraints_are_read_from_the_config_and_floor_accuracy_below_fp32() -> None:
    constraints = constraints_of({"search": {"constraints": {"max_accuracy_drop": 0.01,
                                                             "max_latency_ms": 8}}})
    assert constraints.max_latency_ms == 8 and constraints.max_size_mb is None
    assert constraints.floor(0.97) == pytest.approx(0.96)
    assert constraints_of({}).floor(0.97) is None


def test_export_command_names_only_what_the_run_folder_does_not_imply(tmp_path: Path) -> None:
    folder = tmp_path / "my run"
    assert export_command(Location.resolve("my run", folder), 3) == (
        f"edgetune export --run-dir '{folder}' --trial 3 --out export-trial-3")
    assert export_command(Location.resolve("bbc", folder), 3) == (
        f"edgetune export --run-dir '{folder}' --study bbc --trial 3 --out export-trial-3")
    remote = Location.resolve("bbc", folder, "postgresql://me:secret@db/edgetune")
    assert "--storage 'postgresql://me:***@db/edgetune' --study bbc" in export_command(remote, 3)


def test_passwords_in_storage_urls_are_hidden() -> None:
    assert hide_password("postgresql://me:secret@db:5432/x") == "postgresql://me:***@db:5432/x"
    assert hide_password("sqlite:///runs/a/study.db") == "sqlite:///runs/a/study.db"
