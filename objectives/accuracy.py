"""Accuracy of a model file on a split, in its runtime (by its suffix) with the target's threads.

The same function scores a trial and re-scores an exported model, so both agree exactly on the
same data and runtime. It runs the model at the target's batch size, as the device will: dynamic
INT8 computes activation scales per batch, so the same text scored among 31 others can be given
another label than alone. ``torch_accuracy`` scores a torch model during training (early
stopping), a cheap look in batches of ``TRAINING_LOOK_BATCH``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgetune.objectives.runtimes import runtime_of
from edgetune.objectives.target import TargetConfig

TRAINING_LOOK_BATCH = 32


def predict(model: Path, inputs: dict[str, np.ndarray], target: TargetConfig) -> np.ndarray:
    """Logits for every row of ``inputs``, run ``target.batch_size`` rows at a time."""
    session = runtime_of(model).open(model, target)
    rows, size = len(next(iter(inputs.values()))), target.batch_size
    return np.concatenate([
        session({name: value[start : start + size] for name, value in inputs.items()})
        for start in range(0, rows, size)
    ])


def accuracy(model: Path, inputs: dict[str, np.ndarray], labels: np.ndarray,
             target: TargetConfig) -> float:
    logits = predict(model, inputs, target)
    if not np.isfinite(logits).all():
        raise FloatingPointError("the model produced non-finite logits")
    return float((logits.argmax(axis=1) == labels).mean())


def torch_accuracy(model: torch.nn.Module, inputs: dict[str, np.ndarray],
                   labels: np.ndarray) -> float:
    """Accuracy of a torch classifier in eval mode: a cheap look while it is still training."""
    rows = len(labels)
    correct = 0
    with torch.no_grad():
        for start in range(0, rows, TRAINING_LOOK_BATCH):
            batch = {name: torch.from_numpy(value[start : start + TRAINING_LOOK_BATCH])
                     for name, value in inputs.items()}
            predicted = model(**batch).logits.argmax(dim=1).numpy()
            correct += int((predicted == labels[start : start + TRAINING_LOOK_BATCH]).sum())
    return correct / rows
