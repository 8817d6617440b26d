"""Accuracy of a model file on a split, in its runtime (by its suffix) with the target's threads.

The same function scores a trial and re-scores an exported model, so both agree exactly on the
same data and runtime. It runs the model at the target's batch size, as the device will: dynamic
INT8 computes activation scales per batch, so the same text scored among 31 others can be given
another label than alone. It loads no torch: the measurement agent (``edgetune agent``) scores
with it on a device that has only the runtime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgetune.objectives.runtimes import runtime_of
from edgetune.objectives.target import TargetConfig


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
