"""A model's numbers: the task metric on labelled inputs and latency interleaved with the FP32
reference.

A trial, the export of its model and the measurement agent on a device (``edgetune agent``) all
measure through ``measure_arrays``, so they agree exactly on the metric (same inputs, same
runtime). It needs only the runtime and numpy: no torch, no tokenizer, no data set.
"""

from __future__ import annotations

import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgetune.objectives.accuracy import scored
from edgetune.objectives.latency import (
    Latency,
    MeasureConfig,
    Ratio,
    latency_inputs,
    measure,
    ratio,
)
from edgetune.objectives.target import TargetConfig


@dataclass
class Measurement:
    accuracy: float  # the task metric's value (``task.metric``; the name is the stored format's)
    latency: Latency
    reference_latency: Latency
    size_mb: float
    zipped_mb: float
    confusion: list[list[int]] | None = None  # of the labels scored; None in older records

    @property
    def ratio(self) -> Ratio:
        return ratio(self.latency, self.reference_latency)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> Measurement:
        """Read back ``as_dict``: what an agent stores on a trial for the builder to record."""
        return cls(accuracy=float(stored["accuracy"]), latency=Latency(**stored["latency"]),
                   reference_latency=Latency(**stored["reference_latency"]),
                   size_mb=float(stored["size_mb"]), zipped_mb=float(stored["zipped_mb"]),
                   confusion=stored.get("confusion"))


def measure_arrays(model: Path, reference: Path, inputs: dict[str, np.ndarray],
                   labels: np.ndarray, timing_inputs: dict[str, np.ndarray],
                   target: TargetConfig, settings: MeasureConfig, metric: str,
                   label_names: list[str],
                   reference_timing_inputs: dict[str, np.ndarray] | None = None) -> Measurement:
    """``model``'s ``metric`` (``task.metric``) on ``inputs`` (token ids) against ``labels``
    (indices into ``label_names``), and its latency interleaved with ``reference``'s on batches
    cut from ``timing_inputs`` (the validation split's); the reference's from
    ``reference_timing_inputs`` where its tokenizer differs from the model's (a trimmed
    vocabulary)."""
    score = scored(model, inputs, labels, target, metric, label_names)
    batches = latency_inputs(timing_inputs, target, settings.inputs)
    own = None if reference_timing_inputs is None else {
        "reference": latency_inputs(reference_timing_inputs, target, settings.inputs)}
    latencies = measure({"candidate": model, "reference": reference}, batches, target, settings,
                        reference="reference", own_inputs=own)
    return Measurement(
        accuracy=score.value,
        confusion=score.confusion,
        latency=latencies["candidate"],
        reference_latency=latencies["reference"],
        size_mb=model.stat().st_size / 1e6,
        zipped_mb=zipped_size(model) / 1e6,
    )


def zipped_size(path: Path) -> int:
    """Bytes of the file deflated as in a .zip download: what unstructured sparsity saves."""
    target = path.with_suffix(".zip")
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(path, path.name)
    size = target.stat().st_size
    target.unlink()
    return size
