"""QAT trains with NNCF's fake-quantizers and reaches ONNX Runtime in a form it reproduces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgetune.objectives.accuracy import accuracy
from edgetune.objectives.checkpoint import load_classifier
from edgetune.objectives.export import export_onnx
from edgetune.objectives.qat import (
    BAKED_WEIGHTS_QUANTIZATION,
    QDQ_FILE,
    quantization_aware_training,
)
from edgetune.objectives.quantization import quantize_dynamic_int8
from edgetune.spaces.qat import QatRecipe
from helpers import op_counts


def trained(bench, export: str, folder: Path) -> Path:  # type: ignore[no-untyped-def]
    quantization_aware_training(load_classifier(bench.base), bench.task,
                                QatRecipe(steps=3, learning_rate=1e-3, export=export),
                                batch_size=8, seed=0, folder=folder)
    return folder


def validation_accuracy(model: Path, bench) -> float:  # type: ignore[no-untyped-def]
    return accuracy(model, bench.task.encoded("validation"), bench.task.labels("validation"),
                    bench.target)


@pytest.fixture(scope="module")
def baked(tiny_bench, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    """The QAT checkpoint's FP32 export and its dynamic INT8 quantization."""
    folder = tmp_path_factory.mktemp("qat-dynamic")
    checkpoint = trained(tiny_bench, "dynamic", folder / "checkpoint")
    fp32 = export_onnx(load_classifier(checkpoint), tiny_bench.input_names, folder / "fp32.onnx")
    int8 = folder / "int8.onnx"
    quantize_dynamic_int8(fp32, int8, BAKED_WEIGHTS_QUANTIZATION)
    return fp32, int8


def test_qat_weights_lie_on_the_grid_onnx_runtime_quantizes_them_to(baked: tuple[Path, Path]) -> None:
    fp32, int8 = baked
    floats = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(fp32)).graph.initializer}
    graph = onnx.load(str(int8)).graph
    ints = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    checked = 0
    for node in graph.node:
        if node.op_type != "MatMulInteger" or node.input[1][:-len("_quantized")] not in floats:
            continue
        name = node.input[1][:-len("_quantized")]
        scale = ints[f"{name}_scale"]
        restored = (ints[node.input[1]].astype(np.float32) - ints[f"{name}_zero_point"]) * scale
        assert np.abs(restored - floats[name]).max() < 1e-3 * scale.max()  # the same values
        checked += 1
    assert checked == 12  # every Q/K/V, output and FFN projection of both layers


def test_qat_dynamic_export_trains_and_onnx_runtime_reproduces_its_accuracy(
        baked: tuple[Path, Path], tiny_bench) -> None:  # type: ignore[no-untyped-def]
    fp32, int8 = baked
    base = {i.name: numpy_helper.to_array(i)
            for i in onnx.load(str(tiny_bench.reference())).graph.initializer}
    trained_weights = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(fp32)).graph.initializer}
    changed = [n for n in base if n in trained_weights and not np.array_equal(base[n], trained_weights[n])]
    assert changed  # training moved the weights
    assert validation_accuracy(int8, tiny_bench) == pytest.approx(
        validation_accuracy(fp32, tiny_bench), abs=0.05)


def test_qat_qdq_export_quantizes_weights_and_activations(tiny_bench, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model = trained(tiny_bench, "qdq", tmp_path) / QDQ_FILE
    ops = op_counts(model)
    assert ops["QuantizeLinear"] >= 24 and ops["DequantizeLinear"] >= 24
    reference = validation_accuracy(tiny_bench.reference(), tiny_bench)
    assert validation_accuracy(model, tiny_bench) >= reference - 0.2
