"""ONNX export of a torch classifier, in the form ONNX Runtime's transformer fusions recognise.

A text classifier's batch and sequence axes stay open; an image classifier's batch axis only:
its resolution is fixed (``target.image_size``), as a camera pipeline's is.

Two choices were measured on this machine (benchmarks/RESULTS.md): eager attention, because the
SDPA export blocks the attention fusion and runs ~14% slower; and the TorchScript exporter
(``dynamo=False``), because ``optimize_model`` fuses Attention and EmbedLayerNormalization in its
graphs but not in the dynamo exporter's. Each attention's head count is then written into its
Q/K/V Reshapes (see ``write_head_counts``), so the fusion reads every layer's own count.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.transformers.onnx_model import OnnxModel
from transformers import PreTrainedModel

from edgetune.objectives.target import TargetConfig
from edgetune.objectives.traceable import PIXELS, Logits, example_inputs

OPSET = 17
OUTPUT = "logits"
# Part of every cached export's key: raise it when the exported graph changes, so that exports
# cached by an older edgetune are not reused (2: head counts written into the Q/K/V Reshapes).
EXPORT_FORMAT = 2


def export_onnx(model: PreTrainedModel, input_names: list[str], path: Path,
                sequence_length: int = 16, image_size: int | None = None) -> Path:
    """Write ``model`` to ``path`` as one ONNX file with dynamic batch and sequence axes (an
    image classifier: a dynamic batch of ``image_size`` squares)."""
    model = model.eval()
    image_shape = None
    if image_size is not None:
        image_shape = (int(getattr(model.config, "num_channels", 3)), image_size, image_size)
    dynamic_axes = {name: {0: "batch"} if name == PIXELS else {0: "batch", 1: "sequence"}
                    for name in input_names}
    dynamic_axes[OUTPUT] = {0: "batch"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(
            # In eval mode: the exporter restores the wrapper's mode on everything inside it,
            # and a new module is in training mode, which would leave ``model`` with dropout on.
            Logits(model, input_names).eval(),
            example_inputs(input_names, 1, sequence_length, image_shape),
            str(path),
            input_names=input_names,
            output_names=[OUTPUT],
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            dynamo=False,
        )
    model_proto = onnx.load(str(path))
    if write_head_counts(model_proto):
        onnx.save(model_proto, str(path))
    return path


def compile_onnx(model: PreTrainedModel, input_names: list[str], path: Path,
                 target: TargetConfig) -> Path:
    """ONNX Runtime's compile step (``objectives.runtimes.RUNTIMES``): the ONNX export, whose
    batch and sequence axes stay open whatever the target's shapes (an image's size is fixed)."""
    return export_onnx(model, input_names, path, image_size=target.image_size)


def write_head_counts(model_proto: onnx.ModelProto) -> int:
    """Replace the ``-1`` head count of each Q/K/V Reshape by the layer's count; return how many.

    transformers 5 reshapes Q, K and V to ``(batch, sequence, -1, head_size)``. ONNX Runtime's
    attention fusion reads the head count from that shape; given ``-1`` it either fuses nothing
    (``num_heads=0``) or assumes the count it is told for every layer, which is wrong for a
    structurally pruned model whose layers keep different numbers of heads. The count written
    is the projection's width (from ONNX shape inference) over the head size: the value ``-1``
    stands for, so the graph computes the same thing.
    """
    graph = OnnxModel(model_proto)
    producers = graph.output_name_to_node()
    widths = {
        info.name: info.type.tensor_type.shape.dim[-1].dim_value
        for info in onnx.shape_inference.infer_shapes(model_proto).graph.value_info
        if info.type.tensor_type.shape.dim
    }
    written = 0
    for reshape in graph.get_nodes_by_op_type("Reshape"):
        concat = producers.get(reshape.input[1])
        if concat is None or concat.op_type != "Concat" or len(concat.input) != 4:
            continue
        heads, head_size = (graph.get_constant_value(name) for name in concat.input[2:])
        width = widths.get(reshape.input[0], 0)  # 0: unknown
        if heads is None or heads.tolist() != [-1] or head_size is None or not width:
            continue
        count = onnx.numpy_helper.from_array(
            np.array([width // int(head_size[0])], dtype=np.int64), f"{concat.name}/head_count"
        )
        graph.add_initializer(count)
        concat.input[2] = count.name
        written += 1
    return written
