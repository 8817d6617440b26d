"""Unstructured L1 pruning shrinks the zipped download, not the dense shapes the CPU multiplies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from edgetune.objectives.build import Candidate, Workbench
from edgetune.objectives.candidate import build, evaluate
from edgetune.spaces.pruning import UnstructuredPruning
from edgetune.spaces.recipe import Recipe
from edgetune.spaces.recovery import RecoveryRecipe


def matmul_weights(path: Path) -> list[np.ndarray]:
    model = onnx.load(str(path))
    weights = {w.name: onnx.numpy_helper.to_array(w) for w in model.graph.initializer}
    return [weights[n.input[1]] for n in model.graph.node
            if n.op_type == "MatMul" and n.input[1] in weights]


def test_zipped_size_shrinks_while_dense_shapes_stay(tiny_bench: Workbench,
                                                     tmp_path: Path) -> None:
    sparse = Recipe(pruning=UnstructuredPruning(ratio=0.7),
                    recovery=RecoveryRecipe(steps=5, learning_rate=3e-3))
    built = {name: build(recipe, tiny_bench, Candidate(path=tmp_path / name / "model.onnx"))
             for name, recipe in {"dense": Recipe(), "sparse": sparse}.items()}

    measured = {name: evaluate(candidate, tiny_bench) for name, candidate in built.items()}

    dense, sparse_weights = (matmul_weights(built[n].path) for n in ("dense", "sparse"))
    assert [w.shape for w in sparse_weights] == [w.shape for w in dense]
    assert all((w == 0).mean() >= 0.7 for w in sparse_weights)  # recovery did not regrow them
    assert measured["sparse"].size_mb == pytest.approx(measured["dense"].size_mb, rel=0.01)
    assert measured["sparse"].zipped_mb < 0.8 * measured["dense"].zipped_mb
    assert measured["sparse"].accuracy > 0.9  # recovered; measured on the validation split
