"""What an image task can be compressed with today, checked before a run writes anything.

Image classifiers run on ONNX Runtime, quantized by its dynamic INT8 (which covers the MatMul and
Gemm of vision transformers) and static INT8 (calibrated Q/DQ, which also covers convolutions:
what a CNN needs to gain on a CPU). A vision transformer is built like a text encoder: structured
pruning drops its blocks, heads and MLP neurons (``objectives.architectures``), unstructured
pruning zeroes its ``nn.Linear`` weights, and ONNX Runtime fuses its attentions, LayerNorms and
GELUs (``objectives.graph``). A CNN has none of these: channel pruning (``objectives.channels``,
Torch-Pruning's dependency graph) narrows its convolutions instead. The other knobs (NNCF, QAT,
vocabulary trimming) and the other runtimes are text-only for now: a space naming them is
refused in one line.

A config whose task is image classification (``task.kind: image``, or a checkpoint that makes
only image classifiers) gets ``image_space`` of its checkpoint's model type where its space
leaves a choice unset: what every image classifier can take, and the pruning its architecture
takes (``with_image_defaults``).
"""

from __future__ import annotations

from typing import Any

from edgetune.errors import InputError
from edgetune.objectives.target import TargetConfig
from edgetune.spaces.channels import CHANNEL_PRUNABLE
from edgetune.spaces.knob import DEFAULT_RUNTIME
from edgetune.spaces.space import SearchSpace

# Model types that are vision transformers: built of Linear layers, fused by ONNX Runtime's
# "vit" optimizer.
VISION_TRANSFORMERS = {"vit", "deit"}
IMAGE_SCHEMES = {"none", "dynamic", "static"}
# The mixed-precision groups name transformer blocks, which a CNN has none of: all INT8 by default.
IMAGE_SPACE: dict[str, Any] = {
    "pruning": {"methods": ["none"]},
    "quantization": {"schemes": sorted(IMAGE_SCHEMES),
                     "dynamic": {"keep_fp32": ["none"]},
                     "static": {"op_types": ["all"], "keep_fp32": ["none"]}},
    "graph": {"fusion": [False]},
}


def image_space(model_type: str | None) -> dict[str, Any]:
    """The defaults of an image task on a ``model_type`` checkpoint: ``IMAGE_SPACE``, with
    channel pruning for the CNNs that take it. A vision transformer's structured pruning stays
    opt-in: how many blocks may go depends on its depth, which the text defaults' range
    (up to 4 layers dropped) does not fit."""
    if model_type not in CHANNEL_PRUNABLE:
        return IMAGE_SPACE
    return {**IMAGE_SPACE, "pruning": {"methods": ["none", "channels"]}}


def with_image_defaults(space: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``space`` (a config's raw ``space:`` section) with ``defaults`` wherever it sets nothing."""
    filled = dict(space)
    for key, value in defaults.items():
        if key not in filled:
            filled[key] = value
        elif isinstance(value, dict) and isinstance(filled[key], dict):
            filled[key] = with_image_defaults(filled[key], value)
    return filled


def check_image_space(model_type: str, target: TargetConfig, space: SearchSpace) -> None:
    """Refuse a runtime or a knob an image task of ``model_type`` cannot be built with.

    Raises:
        InputError: naming the field, and what to set it to.
    """
    runtimes = {target.runtime, *(space.runtime or [])}
    if runtimes != {DEFAULT_RUNTIME}:
        field = "target.runtime" if target.runtime != DEFAULT_RUNTIME else "space.runtime"
        raise InputError(field, f"image tasks run on {DEFAULT_RUNTIME} only for now")
    transformer = model_type in VISION_TRANSFORMERS
    allowed = ({"none", "structured", "unstructured"} if transformer
               else {"none", "channels"} if model_type in CHANNEL_PRUNABLE else {"none"})
    if refused := sorted(set(space.pruning.methods) - allowed):
        raise InputError("space.pruning.methods",
                         f"{', '.join(refused)} pruning of {model_type!r} image classifiers is not "
                         f"supported yet; keep {' or '.join(sorted(allowed))} (task.kind: image "
                         "makes the space's defaults those of image tasks)")
    if refused := sorted(set(space.quantization.schemes) - IMAGE_SCHEMES):
        raise InputError("space.quantization.schemes",
                         f"{', '.join(refused)}: not for image classifiers yet; use "
                         f"{', '.join(sorted(IMAGE_SCHEMES))} (task.kind: image makes the "
                         "space's defaults those of image tasks)")
    if space.vocabulary is not None and True in space.vocabulary.trim:
        raise InputError("space.vocabulary", "an image classifier has no vocabulary to trim")
    if not transformer and True in space.graph.fusion:
        raise InputError("space.graph.fusion", f"ONNX Runtime's transformer fusions do not apply "
                                               f"to {model_type!r}: set it to [false]")
