"""Core ML export of a torch classifier: an ``.mlpackage`` (ML program) written through
``torch.export`` and coremltools, its weight matrices INT8 where the recipe quantizes them.

Core ML runs on Apple platforms only: here a package is written and then checked as a spec
(inputs, output, weight types), never run. ``torch.jit.trace`` conversion fails on Linux with
this model; ``torch.export`` converts. Choices:

- inputs are int32: a Core ML multi-array holds no int64, and int32 is its integer type (token
  ids, masks and segment ids fit). Shapes are fixed at the target's batch × sequence length;
- the padding mask is made additive in the graph (``Logits(additive_mask=True)``), so the
  converted graph holds none of transformers' mask-building code;
- ``compute_precision`` is FP32, so the package computes what the study measured; coremltools'
  default, FP16, would be a recipe no trial measured;
- minimum deployment target iOS 16 / macOS 13: the first whose ML programs store weights as
  INT8 (``constexpr_affine_dequantize``). Both FP32 and INT8 packages use it, so one export
  reaches the same devices whatever the recipe;
- INT8 weights are symmetric per output channel (scale max|w| / 127, ONNX Runtime's per-channel
  rule), for every weight of more than ``WEIGHT_THRESHOLD`` values: the linear layers and the
  embedding tables. Biases, norms and a classifier head of a few labels stay FP32 (a few KB).
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from edgetune.objectives.traceable import Logits, example_inputs
from edgetune.spaces.base import Strict

OUTPUT = "logits"
# coremltools' own default: weights of at most this many values are not quantized.
WEIGHT_THRESHOLD = 2048
INPUT_TYPE = "INT32"
OUTPUT_TYPE = "FLOAT32"


def export_coreml(model: PreTrainedModel, input_names: list[str], path: Path, batch_size: int,
                  sequence_length: int, int8_weights: bool) -> Path:
    """Write ``model`` to ``path`` (an ``.mlpackage`` folder) with int32 inputs named
    ``input_names`` of shape ``(batch_size, sequence_length)`` and one output, ``logits``."""
    ct = _coremltools()
    model = model.eval()
    inputs = tuple(tensor.to(torch.int32)
                   for tensor in example_inputs(input_names, batch_size, sequence_length))
    with _quiet(), torch.no_grad():
        program = torch.export.export(Logits(model, input_names, additive_mask=True), inputs)
        mlmodel = ct.convert(program.run_decompositions({}),
                             minimum_deployment_target=ct.target.iOS16,
                             compute_precision=ct.precision.FLOAT32)
        if int8_weights:
            mlmodel = _quantize_weights(mlmodel)
        spec = mlmodel.get_spec()
        traced = [feature.name for feature in spec.description.input]
        for old, new in zip(traced, input_names):
            ct.utils.rename_feature(spec, old, new)
        ct.utils.rename_feature(spec, spec.description.output[0].name, OUTPUT)
        renamed = ct.models.MLModel(spec, weights_dir=mlmodel.weights_dir, skip_model_load=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        renamed.save(str(path))
    return path


def _quantize_weights(mlmodel: Any) -> Any:
    from coremltools.optimize.coreml import (
        OpLinearQuantizerConfig,
        OptimizationConfig,
        linear_quantize_weights,
    )

    config = OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8",
                                     granularity="per_channel", weight_threshold=WEIGHT_THRESHOLD)
    with warnings.catch_warnings():
        # A channel of zeros (the padding token's embedding) gets scale 0 and numpy warns on
        # 0 / 0; its values dequantize to 0 × scale = 0 whatever the integer.
        warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning)
        return linear_quantize_weights(mlmodel, OptimizationConfig(global_config=config))


def check_coreml(path: Path, input_names: list[str], batch_size: int, sequence_length: int,
                 labels: int, int8_weights: bool | None = None) -> dict[str, Any]:
    """Check the package at ``path`` as a spec (Core ML cannot run here) and say what was checked.

    Checked: an ML program whose inputs are ``input_names`` in that order, each int32 of shape
    ``(batch_size, sequence_length)``; one float32 output ``logits`` of shape
    ``(batch_size, labels)``; with ``int8_weights`` True, at least one INT8 weight and no FP32
    weight of more than ``WEIGHT_THRESHOLD`` values left, with False, no INT8 weight (None:
    counted, not checked).

    Raises:
        ValueError: ``path`` is not a Core ML package, or naming each thing that does not
            match.
    """
    ct = _coremltools()
    try:
        with _quiet():
            spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    except (OSError, RuntimeError) as error:  # no folder; no manifest or spec in it
        raise ValueError(f"{path}: not a Core ML package ({error})") from error
    shape = [batch_size, sequence_length]
    inputs = {feature.name: _feature(feature) for feature in spec.description.input}
    outputs = {feature.name: _feature(feature) for feature in spec.description.output}
    weights = _weight_types(spec)
    wrong = []
    if spec.WhichOneof("Type") != "mlProgram":
        wrong.append(f"a {spec.WhichOneof('Type')} model, not an ML program")
    if list(inputs) != input_names:
        wrong.append(f"inputs {list(inputs)}, expected {input_names}")
    wrong += [f"input {name} is {kind} {dims}, expected {INPUT_TYPE} {shape}"
              for name, (kind, dims) in inputs.items() if (kind, dims) != (INPUT_TYPE, shape)]
    expected = (OUTPUT_TYPE, [batch_size, labels])
    if list(outputs) != [OUTPUT]:
        wrong.append(f"outputs {list(outputs)}, expected ['{OUTPUT}']")
    elif outputs[OUTPUT] != expected:
        wrong.append(f"output {OUTPUT} is {outputs[OUTPUT][0]} {outputs[OUTPUT][1]}, "
                     f"expected {expected[0]} {expected[1]}")
    # A model too small to hold a weight of more than WEIGHT_THRESHOLD values has none to quantize.
    if int8_weights and weights["float"]:
        wrong.append(f"{weights['float']} FP32 weights of more than {WEIGHT_THRESHOLD} values "
                     "left unquantized")
    if int8_weights is False and weights["int8"]:
        wrong.append(f"{weights['int8']} INT8 weights in an FP32 export")
    if wrong:
        raise ValueError(f"{path}: " + "; ".join(wrong))
    return {
        "format": "mlpackage",
        "runs_on": "macOS/iOS only: not run here",
        "minimum_deployment_target": "iOS16/macOS13",
        "specification_version": spec.specificationVersion,
        "inputs": {name: f"{kind} {dims}" for name, (kind, dims) in inputs.items()},
        "output": {OUTPUT: f"{expected[0]} {expected[1]}"},
        "int8_weights": weights["int8"],
        "fp32_weights": weights["float"],
    }


def _feature(feature: Any) -> tuple[str, list[int]]:
    """A feature's multi-array data type name and shape."""
    array = feature.type.multiArrayType
    return array.ArrayDataType.Name(array.dataType), list(array.shape)


def _weight_types(spec: Any) -> dict[str, int]:
    """How many weights the ML program stores as INT8 (``int8``: the quantized data of its
    constexpr dequantize ops) and as float with more than ``WEIGHT_THRESHOLD`` values
    (``float``: constants read from the weight file)."""
    counts = {"int8": 0, "float": 0}
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            for operation in block.operations:
                for name, value in operation.attributes.items():
                    if not value.HasField("blobFileValue"):
                        continue
                    tensor = value.type.tensorType
                    size = 1
                    for dimension in tensor.dimensions:
                        size *= dimension.constant.size
                    data_type = _data_type_name(tensor.dataType)
                    if operation.type.startswith("constexpr_") and data_type in {"INT8", "UINT8"}:
                        counts["int8"] += name in {"quantized_data", "data"}
                    elif (operation.type == "const" and data_type.startswith("FLOAT")
                          and size > WEIGHT_THRESHOLD):
                        counts["float"] += 1
    return counts


def _data_type_name(data_type: int) -> str:
    from coremltools.proto import MIL_pb2

    return MIL_pb2.DataType.Name(data_type)


def coreml_supports(quantization: Strict) -> str | None:
    """Why the Core ML export cannot express the quantization recipe ``quantization``, or None.

    A Core ML package holds an FP32 model or one with INT8 weight matrices (weight-only INT8);
    pruning (structured: a smaller architecture; unstructured: zeros) and ONNX Runtime's graph
    fusions (a kernel choice that computes the same thing) need nothing of it. The schemes:

    - ``none``: FP32;
    - ``dynamic``: INT8 weights (activations stay float: Core ML has no run-time activation
      quantization). Per-tensor, 7-bit (``reduce_range``) and uint8 weights become INT8 per
      channel, no coarser than the trial's. Not with FP32 embedding tables
      (``op_types: matmul``) nor a layer group kept FP32 (``keep_fp32``): those are resolved on
      the ONNX graph, and this export quantizes every weight matrix;
    - ``qat`` with the ``dynamic`` export: INT8 weights, on the grid the training learned
      (symmetric per channel, max|w| / 127, as this export quantizes);
    - LiteRT's ``litert-dynamic`` and ``litert-weight-only`` and ExecuTorch's
      ``executorch-dynamic``: INT8 weights per channel, as they store them;
    - ``static``, ``nncf`` and ``qat`` with the ``qdq`` export quantize activations with
      calibrated or learned ranges (full INT8): a weight-only INT8 package is not that model;
    - any other scheme (a plugin's knob) is unknown here.
    """
    scheme = getattr(quantization, "scheme", None)
    if scheme == "none":
        return None
    if scheme == "dynamic":
        if getattr(quantization, "op_types", None) == "matmul":
            return ("dynamic INT8 with FP32 embedding tables (op_types: matmul): the Core ML "
                    "export quantizes every weight matrix, embeddings included")
        group = getattr(quantization, "keep_fp32", "none")
        if group != "none":
            return (f"mixed precision (keep_fp32: {group}) is chosen on the ONNX graph's nodes: "
                    "the Core ML export quantizes every weight matrix")
        return None
    if scheme == "qat":
        if getattr(quantization, "export", None) == "dynamic":
            return None
        return ("QAT with the qdq export quantizes activations too (full INT8): the Core ML "
                "export holds INT8 weights only")
    if scheme in {"litert-dynamic", "litert-weight-only", "executorch-dynamic"}:
        return None  # INT8 weights per channel, as those schemes store them
    if scheme in {"static", "nncf"}:
        return (f"{scheme} quantization makes activations INT8 with calibrated ranges (full "
                "INT8): the Core ML export holds INT8 weights only")
    return f"the Core ML export does not know the quantization scheme {scheme!r}"


def coreml_int8_weights(quantization: Strict) -> bool:
    """Whether the Core ML package of ``quantization`` holds INT8 weights (see
    ``coreml_supports`` for the mapping).

    Raises:
        ValueError: the recipe cannot be expressed in Core ML, saying why.
    """
    reason = coreml_supports(quantization)
    if reason is not None:
        raise ValueError(reason)
    return getattr(quantization, "scheme", None) != "none"


def _coremltools() -> Any:
    """coremltools, imported without its notes on this platform: the native runtime it cannot
    load off macOS, and framework versions it has not been tested with."""
    with _quiet():
        import coremltools

    return coremltools


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """coremltools' progress bars, warnings and log notes held back; written out if the block
    fails, so that nothing of an error is lost. The process's stdout and stderr are redirected
    while it runs: output of other threads is held too."""
    held = io.StringIO()
    logger = logging.getLogger("coremltools")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with (warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(held),
              contextlib.redirect_stdout(held)):
            warnings.simplefilter("always")
            yield
    except BaseException:
        sys.stderr.write(held.getvalue())
        for warning in caught:
            sys.stderr.write(f"{warning.category.__name__}: {warning.message}\n")
        raise
    finally:
        logger.setLevel(level)
