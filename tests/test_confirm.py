"""`edgetune confirm` measures the front again, together, and says what confirmation changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgetune.search.cli import cli

from studies import HandmadeStudy

FAST_CONFIRM = {"rounds": 3, "max_rounds": 3, "margin": 0.10}


@pytest.fixture(scope="module")
def confirmed(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, tiny_csv: Path,
              tiny_onnx: Path, slow_onnx: Path) -> tuple[HandmadeStudy, dict, dict[str, int]]:
    """A study whose trial figures flatter one model: it was measured at 0.5 ms but is the slow
    BERT, many times slower than the FP32 reference. Confirmation must move it off the front.
    The most accurate trial is the slow BERT too: it stays on the front, slower than measured."""
    made = HandmadeStudy(tmp_path_factory.mktemp("confirm"), tiny_model, tiny_csv,
                         confirm=FAST_CONFIRM)
    trials = {
        "reference": made.add(0.90, 1.0, tiny_onnx),
        "flattered": made.add(0.80, 0.5, slow_onnx),
        "far": made.add(0.70, 5.0, tiny_onnx),  # 5x slower than the reference, less accurate
        "most_accurate": made.add(0.95, 3.0, slow_onnx),
    }
    result = CliRunner().invoke(cli, ["confirm", *made.cli_args(), "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return made, json.loads(result.stdout), trials


def test_confirm_measures_the_front_and_stores_figures_on_its_trials(confirmed) -> None:
    made, _, trials = confirmed
    study = made.reloaded()
    record = study.user_attrs["confirmation"]
    front = [trials["reference"], trials["flattered"], trials["most_accurate"]]
    assert record["trials"] == front
    assert record["rounds"] == FAST_CONFIRM["rounds"]
    for number in front:
        figures = study.trials[number].user_attrs["confirmed"]
        assert len(figures["latency"]["round_medians_ms"]) == FAST_CONFIRM["rounds"]
        assert figures["latency_ms"] == pytest.approx(figures["ratio"] * 1.0)
        assert figures["machine"]["threads"] == 1
        assert figures["date"] == record["date"]


def test_trials_far_from_the_front_are_not_measured_again(confirmed) -> None:
    made, _, trials = confirmed
    assert "confirmed" not in made.reloaded().trials[trials["far"]].user_attrs


def test_a_trial_confirmation_finds_slower_is_flagged_as_moved_off_the_front(confirmed) -> None:
    made, output, trials = confirmed
    figures = made.reloaded().trials[trials["flattered"]].user_attrs["confirmed"]
    assert figures["ratio"] > 2
    assert figures["on_front"] is False and figures["moved_off_front"] is True
    assert [row["trial"] for row in output["moved_off_front"]] == [trials["flattered"]]
    assert trials["flattered"] not in [row["trial"] for row in output["confirmed_front"]]


def test_test_accuracy_is_computed_for_the_confirmed_front_only(confirmed) -> None:
    made, output, trials = confirmed
    study = made.reloaded()
    for number in study.user_attrs["confirmation"]["trials"]:
        figures = study.trials[number].user_attrs["confirmed"]
        assert (figures["test_accuracy"] is not None) == figures["on_front"]
    best = study.trials[trials["most_accurate"]].user_attrs["confirmed"]
    assert best["on_front"] and 0 <= best["test_accuracy"] <= 1
    assert study.trials[trials["most_accurate"]].values[0] == 0.95  # test never replaces it
    rows = {row["trial"]: row for row in output["confirmed_front"]}
    assert rows[trials["most_accurate"]]["test_accuracy"] == best["test_accuracy"]


def test_status_shows_the_confirmed_front_with_test_accuracy(confirmed) -> None:
    made, output, trials = confirmed
    result = CliRunner().invoke(cli, ["status", *made.cli_args()], catch_exceptions=False)
    assert result.exit_code == 0
    best = next(r for r in output["confirmed_front"] if r["trial"] == trials["most_accurate"])
    assert "Confirmed front" in result.stdout
    assert f"{best['test_accuracy']:.2%}" in result.stdout
    assert f"trial {trials['flattered']} (slow model) moved off the front" in result.stdout
    status = json.loads(CliRunner().invoke(cli, ["status", *made.cli_args(), "--json"]).stdout)
    assert status["confirmed_front"] == output["confirmed_front"]
    assert status["confirmation"]["current"] is True


def test_a_trial_that_changes_the_front_makes_the_confirmation_outdated(
        tmp_path: Path, tiny_model: Path, tiny_csv: Path, tiny_onnx: Path) -> None:
    made = HandmadeStudy(tmp_path, tiny_model, tiny_csv, confirm=FAST_CONFIRM)
    made.add(0.90, 1.0, tiny_onnx)
    assert CliRunner().invoke(cli, ["confirm", *made.cli_args()]).exit_code == 0
    made.add(0.99, 9.0, tiny_onnx)  # the most accurate yet: a new front trial
    status = json.loads(CliRunner().invoke(cli, ["status", *made.cli_args(), "--json"]).stdout)
    assert status["confirmation"]["current"] is False


def test_confirm_without_a_study_is_a_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["confirm", "--run-dir", str(tmp_path), "--study", "none"])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "no study 'none'" in result.output
