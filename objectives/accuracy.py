"""Accuracy of a model file on a split, in the target's runtime with the target's threads.

The same function scores a trial and re-scores an exported model, so both agree exactly on the
same data and runtime. ``torch_accuracy`` scores a torch model during training (early stopping).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgetune.objectives.runtimes import for_target
from edgetune.objectives.target import TargetConfig

EVAL_BATCH = 32


def predict(model: Path, inputs: dict[str, np.ndarray], target: TargetConfig) -> np.ndarray:
    """Logits for every row of ``inputs``."""
    session = for_target(target).open(model, target)
    rows = len(next(iter(inputs.values())))
    return np.concatenate([
        session({name: value[start : start + EVAL_BATCH] for name, value in inputs.items()})
        for start in range(0, rows, EVAL_BATCH)
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
        for start in range(0, rows, EVAL_BATCH):
            batch = {name: torch.from_numpy(value[start : start + EVAL_BATCH])
                     for name, value in inputs.items()}
            predicted = model(**batch).logits.argmax(dim=1).numpy()
            correct += int((predicted == labels[start : start + EVAL_BATCH]).sum())
    return correct / rows
