"""The task's metric (``task.metric``): what a trial's first objective scores, in one place.

- ``accuracy`` (the default): the share of texts given their label;
- ``macro_f1``: the mean of each class's F1, over the classes in the labels or the predictions
  (scikit-learn's ``f1_score(average="macro")``), so a rare class counts as much as a common one;
- ``recall:LABEL``: the share of the texts of class LABEL that the model gives LABEL (the share
  of defects caught), whatever it does with the other classes.

Every figure derives from the confusion matrix, which is kept too (counts; rows: true class,
columns: predicted class). It is numpy, not scikit-learn: the measurement agent
(``edgetune agent``) scores on devices that have only the runtime and numpy, and scikit-learn
would bring scipy there for three lines of arithmetic (the tests check these figures against
scikit-learn's).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from edgetune.errors import InputError

ACCURACY = "accuracy"
MACRO_F1 = "macro_f1"
RECALL_PREFIX = "recall:"
FIELD = "task.metric"


@dataclass(frozen=True)
class Metric:
    """A parsed ``task.metric``."""

    kind: str  # accuracy, macro_f1 or recall
    label: str | None = None  # recall's class

    @classmethod
    def parse(cls, text: str) -> Metric:
        """Raises: InputError: not ``accuracy``, ``macro_f1`` or ``recall:LABEL``."""
        if text in (ACCURACY, MACRO_F1):
            return cls(text)
        if text.startswith(RECALL_PREFIX) and text[len(RECALL_PREFIX):].strip():
            return cls("recall", text[len(RECALL_PREFIX):])
        raise InputError(FIELD, f"expected accuracy, macro_f1 or recall:LABEL (got {text!r})")

    @property
    def name(self) -> str:
        """The objective's name (Optuna's metric name, the column titles): ``accuracy``,
        ``macro_f1`` or ``recall_<label>``, the label's characters other than letters, digits,
        ``-`` and ``.`` made ``_``."""
        if self.label is None:
            return self.kind
        return "recall_" + re.sub(r"[^A-Za-z0-9.-]+", "_", self.label)

    def check(self, label_names: list[str]) -> None:
        """Raises: InputError: recall of a label that is not one of the data's classes."""
        if self.label is not None and self.label not in label_names:
            raise InputError(FIELD, f"recall:{self.label}: {self.label!r} is not a class of the "
                                    f"data (its classes: {', '.join(label_names)})")


def confusion(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Counts of (true class, predicted class) pairs, a row and a column per logit.

    Raises:
        FloatingPointError: the model produced non-finite logits.
    """
    if not np.isfinite(logits).all():
        raise FloatingPointError("the model produced non-finite logits")
    classes = logits.shape[1]
    pairs = labels.astype(np.int64) * classes + logits.argmax(axis=1)
    return np.bincount(pairs, minlength=classes * classes).reshape(classes, classes)


def score_confusion(metric: str, counts: np.ndarray, label_names: list[str]) -> float:
    """``metric``'s value on a confusion matrix of ``label_names``' classes."""
    parsed = Metric.parse(metric)
    caught = np.diag(counts).astype(float)
    truths, predictions = counts.sum(axis=1), counts.sum(axis=0)
    if parsed.kind == ACCURACY:
        return float(caught.sum() / counts.sum())
    if parsed.kind == MACRO_F1:
        seen = (truths + predictions) > 0
        return float(np.mean(2 * caught[seen] / (truths + predictions)[seen]))
    parsed.check(label_names)
    wanted = label_names.index(parsed.label)  # type: ignore[arg-type]
    # No text of the class on this split: scikit-learn's 0 too.
    return float(caught[wanted] / truths[wanted]) if truths[wanted] else 0.0


def texts_behind(metric: str, labels: np.ndarray, label_names: list[str]) -> int:
    """How many texts ``metric``'s value is a share of, for its standard error: the class's for
    a recall, every text otherwise (macro-F1 counted as accuracy is: a rough figure, at least 1)."""
    parsed = Metric.parse(metric)
    if parsed.label is None:
        return len(labels)
    parsed.check(label_names)
    return max(1, int((labels == label_names.index(parsed.label)).sum()))


def score(metric: str, logits: np.ndarray, labels: np.ndarray, label_names: list[str]) -> float:
    """``metric``'s value of the predictions ``logits`` (one row per text) against ``labels``
    (indices into ``label_names``)."""
    return score_confusion(metric, confusion(logits, labels), label_names)
