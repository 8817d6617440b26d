"""QAT trains with NNCF's fake-quantizers and reaches ONNX Runtime in a form it reproduces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgetune.objectives.accuracy import accuracy
from edgetune.objectives.build import Workbench
from edgetune.objectives.qat import BAKED_WEIGHTS_QUANTIZATION, trained_with_qat
from edgetune.objectives.quantization import quantize_dynamic_int8
from edgetune.spaces.graph import GraphRecipe
from edgetune.spaces.pruning import StructuredPruning
from edgetune.spaces.recipe import Recipe

from helpers import Build, op_counts, tiny_qat


def weights(model: Path) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(model)).graph.initializer}


def validation_accuracy(model: Path, bench: Workbench) -> float:
    return accuracy(model, bench.task.encoded("validation"), bench.task.labels("validation"),
                    bench.target)


@pytest.fixture(scope="module")
def baked(study_bench: Workbench,
          tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The dynamic-export QAT checkpoint in FP32 ONNX, and its dynamic INT8 quantization."""
    checkpoint = trained_with_qat(study_bench.base, tiny_qat(), study_bench)
    fp32 = study_bench.export(checkpoint) / "model.onnx"
    int8 = tmp_path_factory.mktemp("qat") / "int8.onnx"
    quantize_dynamic_int8(fp32, int8, BAKED_WEIGHTS_QUANTIZATION)
    return fp32, int8


def test_qat_weights_lie_on_the_grid_onnx_runtime_quantizes_them_to(
        baked: tuple[Path, Path]) -> None:
    fp32, int8 = baked
    floats = weights(fp32)
    ints = weights(int8)
    checked = 0
    for node in onnx.load(str(int8)).graph.node:
        name = node.input[1].removesuffix("_quantized") if node.op_type == "MatMulInteger" else ""
        if name not in floats:
            continue
        scale = ints[f"{name}_scale"]
        restored = (ints[node.input[1]].astype(np.float32) - ints[f"{name}_zero_point"]) * scale
        assert np.abs(restored - floats[name]).max() < 1e-3 * scale.min()  # the very same values
        checked += 1
    assert checked == 12  # every Q/K/V, output and FFN projection of both layers


def test_qat_trains_and_onnx_runtime_int8_keeps_its_accuracy(baked: tuple[Path, Path],
                                                            study_bench: Workbench) -> None:
    fp32, int8 = baked
    base = weights(study_bench.reference())
    trained = weights(fp32)
    assert any(not np.array_equal(base[n], trained[n]) for n in base if n in trained)
    assert validation_accuracy(int8, study_bench) == pytest.approx(
        validation_accuracy(fp32, study_bench), abs=0.05)


def test_qat_qdq_export_quantizes_weights_and_activations(tiny_build: Build,
                                                         study_bench: Workbench) -> None:
    model = tiny_build(Recipe(quantization=tiny_qat("qdq")))
    ops = op_counts(model)
    # 14 weights (12 projections, pooler, classifier) and the activations feeding them
    assert ops["QuantizeLinear"] >= 28 and ops["DequantizeLinear"] >= 28
    reference = validation_accuracy(study_bench.reference(), study_bench)
    assert validation_accuracy(model, study_bench) >= reference - 0.2


def test_qat_of_a_structurally_pruned_model_builds_fused(tiny_build: Build) -> None:
    pruned = Recipe(pruning=StructuredPruning(heads_kept=0.5, ffn_kept=0.5, scope="layer"),
                    quantization=tiny_qat(), graph=GraphRecipe(fusion=True))
    ops = op_counts(tiny_build(pruned))
    assert ops["QAttention"] == 2 and ops["MatMulInteger"] >= 6


@pytest.mark.parametrize(("recipe_batch", "trained_batch"), [(4, 4), (None, 16)])
def test_qat_steps_take_the_recipes_batch_or_else_the_fine_tunings(
        study_bench: Workbench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        recipe_batch: int | None, trained_batch: int) -> None:
    from edgetune.objectives import qat
    from edgetune.objectives.checkpoint import load_classifier

    batches: list[int] = []
    real_train = qat.train
    monkeypatch.setattr(qat, "train", lambda model, task, settings, **kwargs: (
        batches.append(settings.batch_size), real_train(model, task, settings, **kwargs))[1])
    recipe = tiny_qat().model_copy(update={"batch_size": recipe_batch})
    qat.quantization_aware_training(load_classifier(study_bench.base), study_bench.task, recipe,
                                    16, 0, tmp_path)
    assert batches == [trained_batch]
