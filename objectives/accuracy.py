"""The task metric of a model file on a split, in its runtime (by its suffix) with the target's
threads.

The same function scores a trial and re-scores an exported model, so both agree exactly on the
same data and runtime. It runs the model at the target's batch size, as the device will: dynamic
INT8 computes activation scales per batch, so the same text scored among 31 others can be given
another label than alone. It loads no torch: the measurement agent (``edgetune agent``) scores
with it on a device that has only the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgetune.objectives.metrics import ACCURACY, confusion, score_confusion
from edgetune.objectives.runtimes import runtime_of
from edgetune.objectives.target import TargetConfig


@dataclass(frozen=True)
class Scored:
    """A model's value of the task metric on a split, and the confusion matrix it comes from."""

    value: float
    confusion: list[list[int]]  # rows: true class, columns: predicted class


def predict(model: Path, inputs: dict[str, np.ndarray], target: TargetConfig) -> np.ndarray:
    """Logits for every row of ``inputs``, run ``target.batch_size`` rows at a time."""
    session = runtime_of(model).open(model, target)
    rows, size = len(next(iter(inputs.values()))), target.batch_size
    return np.concatenate([
        session({name: value[start : start + size] for name, value in inputs.items()})
        for start in range(0, rows, size)
    ])


def scored(model: Path, inputs: dict[str, np.ndarray], labels: np.ndarray, target: TargetConfig,
           metric: str, label_names: list[str]) -> Scored:
    """``model``'s ``metric`` (``task.metric``) on ``inputs`` against ``labels``."""
    counts = confusion(predict(model, inputs, target), labels)
    return Scored(score_confusion(metric, counts, label_names), counts.tolist())


def accuracy(model: Path, inputs: dict[str, np.ndarray], labels: np.ndarray,
             target: TargetConfig) -> float:
    """The share of ``labels`` that ``model`` predicts: ``scored`` with the default metric."""
    return scored(model, inputs, labels, target, ACCURACY, []).value
