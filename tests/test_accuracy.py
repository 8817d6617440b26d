"""Accuracy is what the device computes: the model runs at the target's batch size."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from edgetune.objectives.accuracy import accuracy
from edgetune.objectives.build import Workbench
from edgetune.objectives.runtimes.onnxruntime import OrtSession
from edgetune.objectives.target import TargetConfig
from edgetune.spaces.quantization import DynamicQuantization
from edgetune.spaces.recipe import Recipe

from helpers import Build


@pytest.mark.parametrize("batch_size", [1, 4])
def test_a_split_is_scored_in_batches_of_the_targets_size(
        study_bench: Workbench, monkeypatch: pytest.MonkeyPatch, batch_size: int) -> None:
    rows: list[int] = []
    run = OrtSession.run

    def counted(self: OrtSession, bound: dict[str, np.ndarray]) -> np.ndarray:
        rows.append(len(bound["input_ids"]))
        return run(self, bound)

    monkeypatch.setattr(OrtSession, "run", counted)
    labels = study_bench.task.labels("validation")
    accuracy(study_bench.reference(), study_bench.task.encoded("validation"), labels,
             TargetConfig(threads=1, batch_size=batch_size))
    assert sum(rows) == len(labels)
    assert set(rows[:-1]) == {batch_size} and rows[-1] <= batch_size


def test_a_dynamic_int8_model_scores_as_it_does_one_text_at_a_time(
        study_bench: Workbench, tiny_build: Build) -> None:
    """Dynamic INT8 quantizes activations per batch: the score a trial records must be the one
    the device, running one text at a time, gets."""
    model = tiny_build(Recipe(quantization=DynamicQuantization()))
    inputs, labels = study_bench.task.encoded("test"), study_bench.task.labels("test")
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    alone = [int(session.run(None, {n: inputs[n][row : row + 1] for n in names})[0].argmax())
             for row in range(len(labels))]
    scored = accuracy(model, inputs, labels, TargetConfig(threads=1, batch_size=1))
    assert scored == float(np.mean(np.array(alone) == labels))
