"""The transformer fusions really fuse, keep the model's outputs, and compose with every
quantization the search space can sample."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from edgetune.objectives.accuracy import accuracy, predict
from edgetune.objectives.build import Workbench
from edgetune.spaces.graph import GraphRecipe, fusion_mode
from edgetune.spaces.pruning import StructuredPruning
from edgetune.spaces.quantization import (
    DynamicQuantization,
    NncfQuantization,
    StaticQuantization,
)
from edgetune.spaces.recipe import Recipe
from edgetune.spaces.space import SearchSpace

from helpers import Build, op_counts, tiny_qat

FUSED = {"EmbedLayerNormalization": 1, "Attention": 2, "SkipLayerNormalization": 4,
         "BiasGelu": 2}
# The op that shows each scheme really quantized the graph it was given.
QUANTIZED_OPS = {"dynamic": {"MatMulInteger", "QAttention"},
                 "static": {"QuantizeLinear", "QLinearMatMul"},
                 "nncf": {"QuantizeLinear"}, "qat": {"MatMulInteger", "QuantizeLinear"}}


def logits(model: Path, bench: Workbench) -> np.ndarray:
    return predict(model, bench.task.encoded("validation"), bench.target)


@pytest.mark.parametrize("pruning", [None, StructuredPruning(heads_kept=0.5, ffn_kept=0.5,
                                                             scope="layer")])
def test_fusion_fuses_attention_and_keeps_the_outputs(tiny_build: Build, study_bench: Workbench,
                                                     pruning: StructuredPruning | None) -> None:
    # The pruned model keeps 2 of 4 heads: a head count taken from the config would be wrong.
    plain = Recipe() if pruning is None else Recipe(pruning=pruning)
    fused = plain.model_copy(update={"graph": GraphRecipe(fusion=True)})
    fused_model = tiny_build(fused)
    assert {op: op_counts(fused_model).get(op) for op in FUSED} == FUSED
    assert "MatMul" not in {op for op, n in op_counts(fused_model).items()
                            if op == "MatMul" and n > 6}  # Q/K/V projections are inside Attention
    np.testing.assert_allclose(logits(fused_model, study_bench),
                               logits(tiny_build(plain), study_bench), atol=1e-4)


# The choices that shape each scheme's quantized graph (format, operator set, integer types).
GRAPH_SHAPING = {
    "dynamic": (DynamicQuantization, ("op_types", "weight_type")),
    "static": (StaticQuantization, ("format", "op_types", "activation_type")),
    "nncf": (NncfQuantization, ("preset", "transformer")),
}


def sampleable_quantizations(space: SearchSpace) -> list:  # type: ignore[type-arg]
    """One recipe per combination of the graph-shaping choices of each scheme the space
    samples, one per group of layers it can keep in FP32, and each QAT export."""
    q = space.quantization
    recipes: list = []  # type: ignore[type-arg]
    for scheme, (recipe, fields) in GRAPH_SHAPING.items():
        if scheme not in q.schemes:
            continue
        choices = getattr(q, scheme)
        recipes += [recipe(**dict(zip(fields, values)))
                    for values in itertools.product(*(getattr(choices, f) for f in fields))]
        recipes += [recipe(keep_fp32=keep) for keep in choices.keep_fp32 if keep != "none"]
    if "qat" in q.schemes:
        recipes += [tiny_qat(export) for export in q.qat.export]
    return recipes


COMBINATIONS = [(quantization, fusion)
                for quantization in sampleable_quantizations(SearchSpace())
                for fusion in SearchSpace().graph.fusion
                if fusion_mode(quantization) != "none" or not fusion]


@pytest.mark.parametrize(("quantization", "fusion"), COMBINATIONS,
                         ids=[f"{q.short()}{'-fused' if f else ''}" for q, f in COMBINATIONS])
def test_every_quantization_the_space_samples_builds_with_each_graph_it_allows(
        tiny_build: Build, study_bench: Workbench, quantization, fusion: bool) -> None:
    model = tiny_build(Recipe(quantization=quantization, graph=GraphRecipe(fusion=fusion)))
    ops = op_counts(model)
    assert QUANTIZED_OPS[quantization.scheme] & set(ops)
    if fusion:
        assert ops["SkipLayerNormalization"] == 4
        # static INT8 keeps attention unfused, so that its projections are INT8 too
        attentions = 0 if quantization.scheme == "static" else 2
        assert ops.get("Attention", 0) + ops.get("QAttention", 0) == attentions
    score = accuracy(model, study_bench.task.encoded("validation"),
                     study_bench.task.labels("validation"), study_bench.target)
    assert 0 <= score <= 1
