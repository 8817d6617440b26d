"""The task metric (``task.metric``): accuracy, macro-F1 or one class's recall, from logits."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, f1_score, recall_score

from edgetune.errors import InputError
from edgetune.objectives.metrics import Metric, confusion, score, texts_behind

LABELS = ["defect", "ok", "scratch"]


def logits_predicting(predicted: list[int], classes: int = len(LABELS)) -> np.ndarray:
    return np.eye(classes)[predicted] * 3.0 - 1.0


def test_on_an_imbalanced_split_recall_and_macro_f1_see_the_missed_class_accuracy_hides() -> None:
    """Eight good parts, two defects; a model that calls every part good is 80% accurate,
    catches no defect, and is poor on average over the classes."""
    truth = np.array([1] * 8 + [0] * 2)
    logits = logits_predicting([1] * 10)
    assert score("accuracy", logits, truth, LABELS) == pytest.approx(0.8)
    assert score("recall:defect", logits, truth, LABELS) == 0.0
    assert score("recall:ok", logits, truth, LABELS) == 1.0
    # F1 of "ok": 2·8 / (8 + 10); of "defect": 0; "scratch" neither occurs nor is predicted.
    assert score("macro_f1", logits, truth, LABELS) == pytest.approx((16 / 18 + 0) / 2)


def test_the_figures_are_scikit_learns() -> None:
    rng = np.random.default_rng(0)
    truth = rng.choice(3, size=200, p=[0.1, 0.7, 0.2])
    logits = rng.normal(size=(200, 3)) + np.eye(3)[truth] * 0.8
    predicted = logits.argmax(axis=1)
    assert score("macro_f1", logits, truth, LABELS) == pytest.approx(
        f1_score(truth, predicted, average="macro"))
    for index, label in enumerate(LABELS):
        assert score(f"recall:{label}", logits, truth, LABELS) == pytest.approx(
            recall_score(truth, predicted, labels=[index], average=None)[0])
    assert confusion(logits, truth).tolist() == confusion_matrix(
        truth, predicted, labels=range(3)).tolist()


def test_the_confusion_matrix_has_a_row_per_true_class_and_a_column_per_prediction() -> None:
    truth = np.array([0, 0, 1, 2])
    assert confusion(logits_predicting([0, 1, 1, 1]), truth).tolist() == [
        [1, 1, 0], [0, 1, 0], [0, 1, 0]]


def test_non_finite_logits_are_an_error_not_a_score() -> None:
    with pytest.raises(FloatingPointError):
        score("accuracy", np.array([[np.nan, 0.0]]), np.array([0]), ["a", "b"])


@pytest.mark.parametrize(("metric", "name"), [
    ("accuracy", "accuracy"), ("macro_f1", "macro_f1"), ("recall:defect", "recall_defect"),
    ("recall:hard disk", "recall_hard_disk")])
def test_each_metric_names_its_objective(metric: str, name: str) -> None:
    assert Metric.parse(metric).name == name


@pytest.mark.parametrize("metric", ["f1", "recall:", "recall", "Accuracy"])
def test_an_unknown_metric_names_the_field(metric: str) -> None:
    with pytest.raises(InputError, match=r"^task\.metric: expected accuracy, macro_f1"):
        Metric.parse(metric)


def test_recall_of_a_label_that_is_not_a_class_names_the_classes() -> None:
    with pytest.raises(InputError, match="'dent' is not a class of the data .*defect, ok"):
        Metric.parse("recall:dent").check(LABELS)


def test_a_recall_rests_on_its_class_texts_only() -> None:
    """Its standard error (early stopping's noise margin) is that of a share of those texts."""
    truth = np.array([1] * 8 + [0] * 2)
    assert texts_behind("recall:defect", truth, LABELS) == 2
    assert texts_behind("accuracy", truth, LABELS) == texts_behind("macro_f1", truth, LABELS) == 10
    assert texts_behind("recall:scratch", truth, LABELS) == 1  # none on this split: never 0
