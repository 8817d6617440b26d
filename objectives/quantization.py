"""Post-training quantization knobs and their build steps: ONNX Runtime dynamic and static INT8,
NNCF post-training INT8, ONNX Runtime 4-bit weights (QAT: ``edgetune.objectives.qat``).

Mixed precision keeps a group of nodes in FP32; the group is resolved to node names on the graph
being quantized (``fp32_nodes``), so one definition serves ONNX Runtime's ``nodes_to_exclude``
and NNCF's ``ignored_scope``, on plain and fused graphs alike.
Search space: ``edgetune.spaces.quantization``. The knobs (``NONE``, ``DYNAMIC``, ``STATIC``,
``NNCF``, ``INT4``) are registered as ``edgetune.knobs`` entry points.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import version_converter
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry
from onnxruntime.quantization.shape_inference import quant_pre_process

from edgetune.objectives.build import Build
from edgetune.spaces.base import Strict
from edgetune.spaces.knob import ONNX_RUNTIME_ONLY, QuantizationScheme, Step
from edgetune.spaces.quantization import (
    DynamicQuantization,
    DynamicSpace,
    Fp32Group,
    Int4Quantization,
    Int4Space,
    NncfQuantization,
    NncfSpace,
    NoQuantization,
    StaticQuantization,
    StaticSpace,
)

Quantize = Callable[[Path, Path, Strict, dict[str, np.ndarray]], None]

CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
INT_TYPES = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
STATIC_FORMATS = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
# Operator types handed to ONNX Runtime (it skips those its chosen mode cannot quantize).
# Attention is the fused Q/K/V projection; EmbedLayerNormalization holds the fused embeddings.
GEMMS = ["MatMul", "Gemm", "Attention"]
# Where, Add and Softmax carry the additive attention mask in unfused graphs: 0 or the lowest
# float (-3.4e38), which no INT8 range holds. The calibrators measure every tensor of the op
# types they are given (nodes_to_exclude does not stop them), and the histogram ones fail on
# it ("Too many bins for data range"), so "all" is everything else ONNX Runtime can quantize;
# NNCF is told to ignore them.
MASK_OPS = {"Where", "Add", "Softmax"}
OP_TYPES: dict[str, list[str]] = {
    "matmul": GEMMS,
    "matmul_gather": [*GEMMS, "Gather", "EmbedLayerNormalization"],
    "all": sorted((set(QLinearOpsRegistry) | set(QDQRegistry)) - MASK_OPS),
}

# What MatMulNBitsQuantizer quantizes: the MatMul weights (MatMulNBits), and the embedding
# tables' Gathers (GatherBlockQuantized). Gemm (the pooler and classifier) it does not take.
INT4_OP_TYPES = {"matmul": ("MatMul",), "matmul_gather": ("MatMul", "Gather")}
# Blocks run along MatMul's input dimension (the only axis MatMulNBits takes) and along each
# embedding row (axis 1 of the [vocabulary, hidden] table), so that a looked-up row is
# dequantized from its own blocks.
INT4_AXES = (("MatMul", 0), ("Gather", 1))
# INT4 tensors (GatherBlockQuantized's table) need opset 21.
INT4_OPSET = 21

# Node names come from the exporter's module scopes, e.g. /model/bert/encoder/layer.3/output/
# dense/MatMul (BERT, RoBERTa), /model/distilbert/transformer/layer.3/ffn/lin2/MatMul or
# /model/vit/layers.3/mlp/fc2/MatMul (transformers 5's ViT and DeiT).
_LAYER = re.compile(r"/layers?\.(\d+)/")
_GROUP_NAMES = {
    "classifier": re.compile(r"/(pooler|pre_classifier|classifier)/"),
    "attention": re.compile(r"/attention/"),
    "ffn_output": re.compile(r"/layers?\.\d+/(output/dense|ffn/lin2|mlp/fc2)/"),
}
# The optimizer names fused attentions Attention_0, Attention_1, ...: no scope in the name.
_GROUP_OPS = {"attention": {"Attention"}}


def fp32_nodes(model: onnx.ModelProto, group: Fp32Group) -> list[str]:
    """Names of the nodes of ``model`` that mixed precision ``group`` keeps in FP32."""
    if group == "none":
        return []
    nodes = list(model.graph.node)
    if group in _GROUP_NAMES:
        return [n.name for n in nodes
                if _GROUP_NAMES[group].search(n.name) or n.op_type in _GROUP_OPS.get(group, ())]
    layers = _layers(nodes)
    if not layers:
        return []
    chosen = min(layers.values()) if group == "first_layer" else max(layers.values())
    return [name for name, layer in layers.items() if layer == chosen]


def _layers(nodes: list[onnx.NodeProto]) -> dict[str, int]:
    """The encoder layer of each node: from its scope, or for a node the optimizer fused (whose
    name has no scope) from the nodes that consume its output."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    layers = {}
    for node in nodes:
        match = _LAYER.search(node.name)
        if match is None and "/" not in node.name and node.op_type != "Constant":
            match = next((m for out in node.output for c in consumers.get(out, [])
                          if (m := _LAYER.search(c.name))), None)
        if match is not None:
            layers[node.name] = int(match.group(1))
    return layers


def quantize_dynamic_int8(source: Path, target: Path, recipe: DynamicQuantization) -> None:
    _quiet()
    quantize_dynamic(
        str(source),
        str(target),
        op_types_to_quantize=OP_TYPES[recipe.op_types],
        per_channel=recipe.per_channel,
        reduce_range=recipe.reduce_range,
        weight_type=INT_TYPES[recipe.weight_type],
        nodes_to_exclude=fp32_nodes(onnx.load(str(source)), recipe.keep_fp32),
        # Fused graphs hold ops (Attention, SkipLayerNormalization) whose output types the
        # quantizer cannot infer; without a default type it refuses them.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def quantize_static_int8(
    source: Path, target: Path, recipe: StaticQuantization, calibration: dict[str, np.ndarray]
) -> None:
    """Quantize weights and activations, with activation ranges calibrated on ``calibration``.

    The graph first gets ONNX Runtime's symbolic shape inference (``quant_pre_process``): it
    types the outputs of fused contrib ops (SkipLayerNormalization, Attention), without which the
    static quantizer skips their consumers and then fails on their biases.
    """
    _quiet()
    prepared = target.with_name(f"{target.stem}.prepared.onnx")
    quant_pre_process(str(source), str(prepared), skip_optimization=True, auto_merge=True)
    try:
        quantize_static(
            str(prepared),
            str(target),
            _Batches(prepared, calibration),
            quant_format=STATIC_FORMATS[recipe.format],
            op_types_to_quantize=OP_TYPES[recipe.op_types],
            activation_type=INT_TYPES[recipe.activation_type],
            weight_type=QuantType.QInt8,
            per_channel=recipe.per_channel,
            calibrate_method=CALIBRATION_METHODS[recipe.calibration],
            nodes_to_exclude=fp32_nodes(onnx.load(str(prepared)), recipe.keep_fp32),
        )
    finally:
        prepared.unlink(missing_ok=True)


def quantize_nncf(source: Path, target: Path, recipe: NncfQuantization,
                  calibration: dict[str, np.ndarray]) -> None:
    """NNCF post-training quantization of the ONNX model, calibrated on ``calibration``."""
    import nncf
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
    )

    model = onnx.load(str(source))
    rows = list(calibration_rows(source, calibration))
    ignored = fp32_nodes(model, recipe.keep_fp32)
    alpha = recipe.smooth_quant_alpha
    quantized = nncf.quantize(
        model,
        nncf.Dataset(rows),
        preset=nncf.QuantizationPreset(recipe.preset),
        model_type=nncf.ModelType.TRANSFORMER if recipe.transformer else None,
        subset_size=len(rows),
        # Without its transformer model type NNCF quantizes the attention mask too (an
        # infinite scale: the model then predicts one class).
        ignored_scope=nncf.IgnoredScope(names=ignored, types=sorted(MASK_OPS), validate=False),
        advanced_parameters=AdvancedQuantizationParameters(
            # A negative alpha switches SmoothQuant off.
            smooth_quant_alphas=AdvancedSmoothQuantParameters(
                matmul=alpha if alpha is not None else -1
            )
        ),
    )
    onnx.save(quantized, str(target))


def quantize_int4(source: Path, target: Path, recipe: Int4Quantization) -> None:
    """Write ``source`` to ``target`` with 4-bit block-wise weights (ONNX Runtime's
    ``MatMulNBitsQuantizer``, round to nearest: no calibration)."""
    # Imported when used: the module calls logging.basicConfig(level=INFO) on import.
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    _quiet()
    model = onnx.load(str(source))
    op_types = INT4_OP_TYPES[recipe.op_types]
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if "Gather" in op_types and opset < INT4_OPSET:
        # The quantizer would only relabel the opset ("the generated model may not be a valid
        # model"); converting rewrites the ops whose signatures changed since.
        model = version_converter.convert_version(model, INT4_OPSET)
    quantizer = MatMulNBitsQuantizer(
        model,
        bits=4,
        block_size=recipe.block_size,
        is_symmetric=recipe.symmetric,
        accuracy_level=recipe.accuracy_level,
        op_types_to_quantize=op_types,
        quant_axes=INT4_AXES,
    )
    # An all-zero block (the padding token's embedding row) has a zero scale, which the
    # quantizer divides by before np.where discards the result: numpy's warning is noise.
    with np.errstate(divide="ignore", invalid="ignore"):
        quantizer.process()
    quantizer.model.save_model_to_file(str(target))


def calibration_rows(model: Path, inputs: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
    """The calibration split one example at a time, restricted to ``model``'s own inputs."""
    names = {i.name for i in onnx.load(str(model), load_external_data=False).graph.input}
    own = {name: value for name, value in inputs.items() if name in names}
    for row in range(len(next(iter(own.values())))):
        yield {name: value[row : row + 1] for name, value in own.items()}


class _Batches(CalibrationDataReader):
    """ONNX Runtime's calibrators read the calibration split through this interface."""

    def __init__(self, model: Path, inputs: dict[str, np.ndarray]) -> None:
        self._rows = calibration_rows(model, inputs)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._rows, None)


def _quiet() -> None:
    # The quantizer logs a pre-processing hint on every call at WARNING on the root logger.
    logging.getLogger().setLevel(logging.ERROR)


def post_training(quantize: Quantize) -> Step:
    """The build step of a post-training scheme: ``quantize(source, target, recipe,
    calibration)`` writes the current graph, quantized, as the candidate's file."""

    def step(build: Build) -> None:
        assert build.model is not None
        quantize(build.model, build.candidate.path, build.recipe.quantization, build.calibration)
        build.model = build.candidate.path

    return step


NONE = QuantizationScheme(name="none", recipe=NoQuantization, label="not quantized (FP32)")
DYNAMIC = QuantizationScheme(
    name="dynamic", recipe=DynamicQuantization, space=DynamicSpace,
    steps={"quantize": post_training(
        lambda source, target, recipe, _: quantize_dynamic_int8(source, target, recipe))},
    colour="#1f77b4", symbol="triangle-up",
    runtimes=ONNX_RUNTIME_ONLY,
)
STATIC = QuantizationScheme(
    name="static", recipe=StaticQuantization, space=StaticSpace,
    steps={"quantize": post_training(quantize_static_int8)},
    # ONNX Runtime has no static integer Attention: static INT8 of a fused attention would leave
    # its Q/K/V projections in FP32 (measured slower, benchmarks/RESULTS.md).
    fusion=lambda recipe: "without_attention",
    colour="#ff7f0e", symbol="square",
    runtimes=ONNX_RUNTIME_ONLY,
)
NNCF = QuantizationScheme(
    name="nncf", recipe=NncfQuantization, space=NncfSpace,
    steps={"quantize": post_training(quantize_nncf)},
    fusion=lambda recipe: "none",  # NNCF's graph analysis fails on the fused contrib ops
    colour="#8c564b", symbol="x",
    runtimes=ONNX_RUNTIME_ONLY,
)
INT4 = QuantizationScheme(
    name="int4", recipe=Int4Quantization, space=Int4Space,
    steps={"quantize": post_training(
        lambda source, target, recipe, _: quantize_int4(source, target, recipe))},
    # A fused Attention packs the Q/K/V weights into one input, which MatMulNBits does not take
    # (they would stay FP32), and with attention fused the optimizer also folds the embedding
    # Gathers into EmbedLayerNormalization (FP32 tables). Without it, the LayerNorm and GELU
    # fusions still apply and every MatMul weight and embedding table is 4-bit.
    fusion=lambda recipe: "without_attention",
    colour="#8c6d31", symbol="hexagram", label="INT4 weights",
    runtimes=ONNX_RUNTIME_ONLY,
)
