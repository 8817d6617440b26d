"""The graph knob and its build step: ONNX Runtime's transformer optimizer (Attention,
EmbedLayerNormalization, SkipLayerNormalization and BiasGelu fusions).

The optimizer finds each attention's head count in the Reshape that splits the heads, but
transformers 5 writes that shape as ``(batch, sequence, -1, head_size)``: the count is ``-1``
and the attention fusion gives up ("Failed to detect num_heads"). Passing one ``num_heads`` is
wrong for structurally pruned models, whose layers keep different numbers of heads, so
``explicit_head_counts`` first writes each layer's own count (its query width / head size) into
those shapes; the optimizer then reads it per layer. A vision transformer's attention has no
mask, which the optimizer fuses only as ``MatMul -> Div -> Softmax``: transformers 5 scales by a
``Mul`` and casts the softmax to float32 and back, so ``vision_attention_as_fusable`` first
rewrites the one and drops the other. Search space: ``edgetune.spaces.graph``; the knob
(``FUSION``) is registered as an ``edgetune.knobs`` entry point.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.transformers import optimizer
from onnxruntime.transformers.fusion_options import FusionOptions
from onnxruntime.transformers.onnx_model import OnnxModel

from edgetune.objectives.build import Build
from edgetune.spaces.graph import GraphRecipe, GraphSpace, fusion_mode
from edgetune.spaces.knob import ONNX_RUNTIME_ONLY, Knob

FUSION_MODEL_TYPES = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert",
                      "distilbert": "bert", "electra": "bert", "vit": "vit", "deit": "vit"}


def fuse(source: Path, target: Path, model_type: str, attention: bool = True) -> dict[str, int]:
    """Write the fused graph of ``source`` to ``target``; return the count of each fused op.

    ``attention=False`` leaves the attention subgraphs as they are (for static quantization,
    which has no integer kernel for the fused Attention op and would leave it in FP32).
    """
    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    model = onnx.load(str(source))
    explicit_head_counts(model)
    if FUSION_MODEL_TYPES.get(model_type) == "vit":
        vision_attention_as_fusable(model)
    options = FusionOptions("bert")
    options.enable_attention = attention
    # QOrderedMatMul, which the optimizer makes of Q/DQ MatMuls, has only a CUDA kernel.
    options.enable_qordered_matmul = False
    optimized = optimizer.optimize_model(
        model,
        model_type=FUSION_MODEL_TYPES.get(model_type, "bert"),
        num_heads=0,
        hidden_size=0,
        optimization_options=options,
        opt_level=0,  # graph fusions only; the session applies its own optimisations at load
    )
    optimized.save_model_to_file(str(target))
    return {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}


def explicit_head_counts(model: onnx.ModelProto) -> int:
    """Replace the ``-1`` head count of each attention's Q/K/V reshape by the layer's real count.

    Matches ``MatMul -> Add -> Reshape(shape=Concat(batch, sequence, -1, head_size))`` and
    returns how many shapes it rewrote.
    """
    graph = OnnxModel(model)
    rewritten = 0
    for reshape in graph.get_nodes_by_op_type("Reshape"):
        concat = graph.get_parent(reshape, 1)
        projection = graph.match_parent_path(reshape, ["Add", "MatMul"], [0, None])
        if concat is None or concat.op_type != "Concat" or len(concat.input) != 4 or not projection:
            continue
        heads = graph.get_constant_value(concat.input[2])
        head_size = graph.get_constant_value(concat.input[3])
        weight = graph.get_constant_value(projection[1].input[1])
        if heads is None or head_size is None or weight is None or heads.size != 1:
            continue
        if int(heads.flat[0]) != -1:
            continue
        name = graph.create_node_name("Constant", f"{reshape.name}_heads")
        count = np.array([weight.shape[1] // int(head_size.flat[0])], dtype=heads.dtype)
        graph.add_initializer(numpy_helper.from_array(count, name))
        concat.input[2] = name
        rewritten += 1
    return rewritten


def vision_attention_as_fusable(model: onnx.ModelProto) -> int:
    """Rewrite each unmasked ``MatMul -> Mul(scale) -> Softmax`` as ``MatMul -> Div(1 / scale)``,
    after removing the casts of a tensor to its own type (the softmax's float32 round trip);
    return how many scales it rewrote. The graph computes the same, up to float rounding."""
    graph = OnnxModel(model)
    graph.remove_useless_cast_nodes()
    rewritten = 0
    for softmax in graph.get_nodes_by_op_type("Softmax"):
        scaling = graph.get_parent(softmax, 0)
        if scaling is None or scaling.op_type != "Mul":
            continue
        for side in (0, 1):
            scale = graph.get_constant_value(scaling.input[side])
            scores = graph.get_parent(scaling, 1 - side)
            if scale is None or scale.size != 1 or scores is None or scores.op_type != "MatMul":
                continue
            name = graph.create_node_name("Constant", f"{scaling.name}_inverse_scale")
            graph.add_initializer(numpy_helper.from_array((1 / scale).astype(scale.dtype), name))
            scaling.op_type = "Div"
            scaling.input[:] = [scaling.input[1 - side], name]
            rewritten += 1
            break
    return rewritten


def fused(build: Build) -> None:
    """The ``fuse`` stage: the current FP32 graph fused as the recipe's quantization allows."""
    assert build.model is not None
    target = build.workdir / "fused.onnx"
    attention = fusion_mode(build.recipe.quantization) == "full"
    build.candidate.notes["fused_ops"] = fuse(build.model, target, build.bench.model_type,
                                              attention)
    build.model = target


FUSION = Knob(slot="graph", name="fusion", recipe=GraphRecipe, space=GraphSpace,
              steps={"fuse": fused}, runtimes=ONNX_RUNTIME_ONLY)
