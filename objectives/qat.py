"""QAT build step: NNCF quantization-aware training of the torch model, exported to ONNX.

``nncf.quantize`` inserts fake-quantizers initialised on the calibration split; the model then
trains with them (the same loop as fine-tuning), and ``nncf.strip`` turns them into torch
FakeQuantize modules that export as QuantizeLinear/DequantizeLinear pairs ONNX Runtime runs as
INT8. Search space: ``edgetune.spaces.qat``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedModel

from edgetune.objectives.export import export_onnx
from edgetune.objectives.task import Task
from edgetune.objectives.training import StepCallback, TrainSettings, train
from edgetune.spaces.qat import QatRecipe



def quantization_aware_training(
    model: PreTrainedModel,
    task: Task,
    recipe: QatRecipe,
    batch_size: int,
    seed: int,
    target: Path,
    callback: StepCallback | None = None,
    callback_every: int = 0,
) -> Path:
    """Quantize ``model`` with NNCF, train it ``recipe.steps`` steps, export Q/DQ ONNX to ``target``."""
    import nncf

    calibration = task.encoded("calibration")
    names = list(calibration)
    samples = [
        {name: torch.from_numpy(calibration[name][row : row + 1]) for name in names}
        for row in range(len(task.labels("calibration")))
    ]
    quantized = nncf.quantize(
        model,
        nncf.Dataset(samples),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(samples),
    )
    settings = TrainSettings(
        steps=recipe.steps, batch_size=batch_size, learning_rate=recipe.learning_rate, seed=seed
    )
    train(quantized, task, settings, callback=callback, callback_every=callback_every)
    stripped = nncf.strip(quantized, example_input=samples[0])
    return export_onnx(stripped, names, target)
