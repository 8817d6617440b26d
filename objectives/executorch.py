"""Compile a torch classifier to an ExecuTorch program (``.pte``) lowered to XNNPACK, in FP32 or
with INT8 weights (dynamic, per-channel): ExecuTorch's compile step, and the knob of its scheme
(``spaces.executorch``).

The flow: ``torch.export`` of ``traceable.Logits`` with the padding mask built in-graph as the
4-D additive mask (transformers' own mask code holds an ``aten.index`` with a non-integer index
that breaks PT2E calibration; the logits are the same, issue 21), then
``to_edge_transform_and_lower`` with the XNNPACK partitioner. INT8 goes through the PT2E flow
first (torchao's ``prepare_pt2e``/``convert_pt2e``) with the XNNPACK quantizer's dynamic
per-channel config: weights INT8 per output channel, activations quantized per batch at run
time, like ONNX Runtime's dynamic quantization. Every linear layer is delegated to XNNPACK, in
FP32 and INT8 (``compile_program`` counts them); embeddings and layer norms run in ExecuTorch's
portable kernels. Full-integer static INT8 is not offered: it gave ~52% argmax agreement with
FP32 (issue 21).

Shapes: the batch and sequence axes are dynamic up to ``batch_size`` and ``sequence_length``
(an axis of size 1 is static). Measured on all-MiniLM-L6-v2 at 1 x 128 tokens, 2 threads, a
dynamic program ran as fast as a static one, FP32 and INT8 alike, and compiled in ~25 s against
~15 s; dynamic, accuracy's short last batch runs only its own rows, and a task whose max_length
is shorter than the program's runs at that length, with nothing padded in. The input names and
axes are stored in the program (``runtimes.executorch.INPUTS_METHOD``).
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from edgetune.objectives.build import Build
from edgetune.objectives.runtimes.executorch import INPUTS_METHOD, describe_inputs
from edgetune.objectives.target import TargetConfig
from edgetune.objectives.traceable import Logits, example_inputs
from edgetune.spaces.executorch import EXECUTORCH_ONLY, ExecuTorchDynamic
from edgetune.spaces.knob import QuantizationScheme

# Libraries that narrate the compile through ``logging``: torchao (its optional CUDA kernels
# failing to load on a CPU machine), torch's pytree and export notes.
CHATTY_LOGGERS = ("torchao", "torch.utils._pytree", "torch.export", "torch._export",
                  "torch.fx.experimental.symbolic_shapes", "executorch")


@dataclass(frozen=True)
class Delegation:
    """How much of a lowered program XNNPACK runs."""

    delegated: int  # graph nodes inside XNNPACK partitions
    not_delegated: int  # nodes left to ExecuTorch's portable kernels
    linear: tuple[int, int]  # linear layers: delegated, not delegated
    seconds: float  # the compile's wall time


def compile_executorch(model: PreTrainedModel, input_names: list[str], path: Path,
                       batch_size: int, sequence_length: int, quantize: bool = False) -> Path:
    """Write ``model`` to ``path`` as an ExecuTorch program lowered to XNNPACK; return ``path``.

    ``batch_size`` and ``sequence_length`` are the largest batch and sequence the program takes.
    With ``quantize``, linear weights are INT8 (dynamic, per channel).
    """
    compile_program(model, input_names, path, batch_size, sequence_length, quantize)
    return path


def compile_program(model: PreTrainedModel, input_names: list[str], path: Path,
                    batch_size: int, sequence_length: int,
                    quantize: bool = False) -> Delegation:
    """``compile_executorch``, returning how much of the program XNNPACK runs."""
    start = time.perf_counter()
    module = Logits(model.eval(), input_names, additive_mask=True).eval()
    sizes = (batch_size, sequence_length)
    dynamic = [size > 1 for size in sizes]
    # An axis traced at size 1 would be specialised to 1: trace dynamic axes at 2.
    inputs = example_inputs(input_names, *(2 if grows else 1 for grows in dynamic))
    shapes = _dynamic_shapes(input_names, sizes, dynamic)
    with _quiet(), torch.no_grad():
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import (
            XnnpackPartitioner,
        )
        from executorch.devtools.backend_debug import get_delegation_info
        from executorch.exir import to_edge_transform_and_lower

        exported = torch.export.export(module, inputs, dynamic_shapes=(shapes,), strict=False)
        if quantize:
            exported = torch.export.export(_quantized(exported, inputs), inputs,
                                           dynamic_shapes=shapes, strict=False)
        lowered = to_edge_transform_and_lower(
            exported, partitioner=[XnnpackPartitioner()],
            constant_methods={INPUTS_METHOD: describe_inputs(input_names, dynamic)})
        info = get_delegation_info(lowered.exported_program().graph_module)
        program = lowered.to_executorch()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(program.buffer)
    linear = info.delegation_by_operator.get("aten_linear_default")
    return Delegation(
        delegated=info.num_delegated_nodes, not_delegated=info.num_non_delegated_nodes,
        linear=(linear.delegated, linear.non_delegated) if linear else (0, 0),
        seconds=time.perf_counter() - start)


def _dynamic_shapes(input_names: list[str], sizes: tuple[int, int],
                    dynamic: list[bool]) -> tuple[dict[int, Any], ...]:
    axes = {axis: torch.export.Dim(name, min=1, max=size)
            for axis, (name, size, grows) in enumerate(zip(("batch", "sequence"), sizes, dynamic))
            if grows}
    return tuple(dict(axes) for _ in input_names)


def _quantized(exported: torch.export.ExportedProgram,
               inputs: tuple[torch.Tensor, ...]) -> torch.fx.GraphModule:
    """The exported graph with INT8 linear weights, per channel, and activations quantized per
    batch at run time (dynamic: the one pass through ``inputs`` only records the graph)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True))
    prepared = prepare_pt2e(exported.module(), quantizer)
    prepared(*inputs)
    return convert_pt2e(prepared)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Warnings and the libraries' informational logging off; errors still raise and log."""
    loggers = [logging.getLogger(name) for name in CHATTY_LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecations inside torch.export and torchao
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def compile_pte(model: PreTrainedModel, input_names: list[str], path: Path,
                target: TargetConfig) -> Path:
    """ExecuTorch's compile step (``objectives.runtimes.RUNTIMES``): FP32, up to the target's
    batch and sequence."""
    return compile_executorch(model, input_names, path, target.batch_size,
                              target.sequence_length)


def quantized(build: Build) -> None:
    """The build step of ``executorch-dynamic``: the torch checkpoint quantized by PT2E and
    lowered, as the candidate's file."""
    target = build.bench.target
    compile_executorch(build.bench.load(build.checkpoint), build.bench.input_names,
                       build.candidate.path, target.batch_size, target.sequence_length,
                       quantize=True)
    build.model, build.done = build.candidate.path, True


DYNAMIC = QuantizationScheme(
    name="executorch-dynamic", recipe=ExecuTorchDynamic, steps={"quantize": quantized},
    compiles=True, runtimes=EXECUTORCH_ONLY, colour="#e377c2", symbol="triangle-right",
)
