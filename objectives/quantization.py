"""Quantization build step: ONNX Runtime's dynamic and static INT8 quantization.

Search space: ``edgetune.spaces.quantization``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from edgetune.spaces.quantization import DynamicQuantization, StaticQuantization

CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}


def quantize_dynamic_int8(source: Path, target: Path, recipe: DynamicQuantization) -> None:
    _quiet()
    quantize_dynamic(
        str(source),
        str(target),
        per_channel=recipe.per_channel,
        weight_type=QuantType.QInt8,
        # Fused graphs hold ops (Attention, SkipLayerNormalization) whose output types the
        # quantizer cannot infer; without a default type it refuses them.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def quantize_static_int8(
    source: Path, target: Path, recipe: StaticQuantization, calibration: dict[str, np.ndarray]
) -> None:
    """Quantize weights and activations, with activation ranges calibrated on ``calibration``.

    Activations are unsigned: with signed activations ONNX Runtime leaves the attention MatMuls in
    FP32 and the model ran 1.2-3.9x slower than FP32 on this machine (issue #3).
    """
    _quiet()
    quantize_static(
        str(source),
        str(target),
        _Batches(source, calibration),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=recipe.per_channel,
        calibrate_method=CALIBRATION_METHODS[recipe.calibration],
    )


class _Batches(CalibrationDataReader):
    """Feeds the calibration split one example at a time, as the calibrators expect."""

    def __init__(self, model: Path, inputs: dict[str, np.ndarray]) -> None:
        names = {i.name for i in ort.InferenceSession(str(model)).get_inputs()}
        self._inputs = {k: v for k, v in inputs.items() if k in names}
        self._rows: Iterator[int] = iter(range(len(next(iter(self._inputs.values())))))

    def get_next(self) -> dict[str, np.ndarray] | None:
        row = next(self._rows, None)
        if row is None:
            return None
        return {name: value[row : row + 1] for name, value in self._inputs.items()}


def _quiet() -> None:
    # The quantizer logs a pre-processing hint on every call at WARNING on the root logger.
    logging.getLogger().setLevel(logging.ERROR)
