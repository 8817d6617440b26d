"""Figures show every trial once per view, the front as shown, FP32, constraints; text as text."""

from __future__ import annotations

import pytest

from edgetune.reports import analysis, data, figures
from edgetune.search.constraints import Constraints

from studies import DYNAMIC, STRUCTURED, UNSTRUCTURED, latency_stats, sampled_study, study_of, trial

HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture()
def trials():
    moved = {"latency_ms": 6.0, "ratio": 0.6, "latency": latency_stats(6.0, [5.0, 6.0, 7.0]),
             "test_accuracy": 0.9, "on_front": False, "moved_off_front": True}
    study = study_of([
        trial(0.97, 10.0, role="reference"),
        trial(0.96, 5.0, DYNAMIC),
        trial(0.90, 3.0, STRUCTURED, confirmed=moved),
        trial(0.95, 9.0, UNSTRUCTURED, recipe_short=HOSTILE),
    ])
    return data.trials_frame(study)


def pareto(trials, constraints: Constraints = Constraints()):
    return figures.pareto(trials, data.front_frame(trials), data.reference(trials), constraints,
                          "latency (ms)")


def kind(figure, name: str) -> list:
    return [t for t in figure.data if (t.meta or {}).get("kind") == name]


def test_each_view_shows_every_complete_trial_once_and_one_view_is_visible(trials) -> None:
    figure = pareto(trials)
    expected = sorted(zip(trials["latency_ms"], trials["accuracy"]))
    views = {t.meta["view"] for t in kind(figure, "trial")}
    assert views == {"quantization", "pruning"}  # one runtime: no view by runtime
    for view in views:
        traces = [t for t in kind(figure, "trial") if t.meta["view"] == view]
        assert sorted(p for t in traces for p in zip(t.x, t.y)) == expected
    assert {t.meta["view"] for t in kind(figure, "trial") if t.visible} == {"quantization"}


def test_a_front_over_several_runtimes_is_coloured_by_runtime_first(trials) -> None:
    trials = trials.assign(runtime=["onnxruntime", "litert", "executorch", "litert"])
    figure = pareto(trials)
    shown = [t for t in kind(figure, "trial") if t.visible]
    assert {t.meta["view"] for t in shown} == {"runtime"}
    assert {t.name: len(t.x) for t in shown} == {"ONNX Runtime": 1, "LiteRT": 2, "ExecuTorch": 1}
    assert len({t.marker.color for t in shown}) == 3
    menu = figure.layout.updatemenus[0]
    assert menu.buttons[menu.active].label == "colour by runtime"


def test_the_buttons_switch_between_colour_by_quantization_and_by_pruning(trials) -> None:
    figure = pareto(trials)
    buttons = figure.layout.updatemenus[0].buttons
    assert len(buttons) == 2
    for button, view in zip(buttons, figures.VIEWS):
        visible = button.args[0]["visible"]
        shown = [t for t, v in zip(figure.data, visible) if v]
        assert {t.meta["view"] for t in shown if t.meta["kind"] == "trial"} == {view}
        assert {"front", "reference"} <= {t.meta["kind"] for t in shown}


def test_the_front_is_joined_as_a_staircase_through_trials_still_on_it(trials) -> None:
    (front,) = kind(pareto(trials), "front")
    assert front.line.shape == "hv"
    assert list(front.x) == [5.0, 10.0]  # trial 2 left the front when confirmed
    assert list(front.text) == ["#1 (-1.0 pt)", "#0 (+0.0 pt)"]  # what shipping it costs


def test_confirmed_figures_carry_the_range_of_their_rounds(trials) -> None:
    (confirmed,) = kind(pareto(trials), "confirmed")
    assert list(confirmed.x) == [6.0]
    assert list(confirmed.error_x.arrayminus) == pytest.approx([1.0])
    assert list(confirmed.error_x.array) == pytest.approx([1.0])
    assert list(confirmed.marker.symbol) == ["x"]  # it moved off the front


def test_fp32_is_marked_and_constraints_draw_lines_only_when_set(trials) -> None:
    plain = pareto(trials)
    (reference,) = kind(plain, "reference")
    assert (reference.x[0], reference.y[0]) == (10.0, 0.97)
    assert [shape.y0 for shape in plain.layout.shapes] == [0.97]  # the FP32 accuracy only
    bounded = pareto(trials, Constraints(max_accuracy_drop=0.02, max_latency_ms=8.0))
    horizontal = [s.y0 for s in bounded.layout.shapes if s.y0 == s.y1]
    vertical = [s.x0 for s in bounded.layout.shapes if s.x0 == s.x1]
    assert horizontal == pytest.approx([0.97, 0.95]) and vertical == [8.0]


def test_study_strings_in_hover_texts_are_escaped(trials) -> None:
    hovers = [h for t in kind(pareto(trials), "trial") for h in t.hovertext]
    hostile = [h for h in hovers if "onerror" in h]
    assert hostile and all("&lt;img src=x onerror=alert(1)&gt;" in h for h in hostile)
    assert not any("<img" in h for h in hovers)
    size = figures.latency_vs_size(trials, Constraints())
    assert not any("<img" in h for t in size.data if t.hovertext for h in t.hovertext)


def test_latency_vs_size_plots_file_and_zipped_size_of_each_trial(trials) -> None:
    figure = figures.latency_vs_size(trials, Constraints(max_size_mb=15))
    markers = [t for t in figure.data if t.mode == "markers"]
    file_sizes = sorted(x for t in markers if t.marker.symbol == "circle" for x in t.x)
    zipped = sorted(x for t in markers if t.marker.symbol == "circle-open" for x in t.x)
    assert file_sizes == sorted(trials["size_mb"]) and zipped == sorted(trials["zipped_mb"])
    assert [shape.x0 for shape in figure.layout.shapes] == [15]


def test_importances_draw_one_bar_series_per_objective_or_nothing() -> None:
    assert figures.importances(analysis.importances(sampled_study(3))) is None
    figure = figures.importances(analysis.importances(sampled_study(10)))
    assert [t.name for t in figure.data] == ["accuracy", "latency_ms"]


def test_hypervolume_is_drawn_over_trials_and_over_wall_time() -> None:
    study = sampled_study(5)
    result = analysis.hypervolume(study, data.trials_frame(study))
    by_trial, by_time = figures.hypervolume(result).data
    assert list(by_trial.x) == list(result.frame["trial"])
    assert list(by_time.x) == list(result.frame["minutes"])


def test_the_pareto_figure_names_the_studys_metric(trials) -> None:
    figure = figures.pareto(trials, data.front_frame(trials), data.reference(trials),
                            Constraints(max_accuracy_drop=0.05), "latency (ms)", "recall_defect")
    assert figure.layout.yaxis.title.text == "validation recall_defect"
    notes = {annotation.text for annotation in figure.layout.annotations}
    assert {"FP32 recall_defect 97.00%", "recall_defect floor 92.00%"} <= notes
    (front,) = kind(figure, "front")
    assert all("validation recall_defect" in text for text in front.hovertext)
