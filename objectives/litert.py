"""LiteRT build steps: a torch classifier converted to a FP32 ``.tflite`` file by litert-torch,
and that file quantized to INT8 weights by the LiteRT Quantizer (``objectives.runtimes.litert``
runs them); the knobs of LiteRT's schemes (``spaces.litert``).

Conversion traces ``Logits`` with the additive mask built in-graph: both masks give the torch
model's logits, and the additive one converts to a smaller graph (no GATHER_ND, SELECT_V2,
LOGICAL_AND, BROADCAST_TO of the mask-building code) in less time. The traced module takes its
inputs by keyword, so the file's signature names them as the tokenizer does (``input_ids``,
``attention_mask``, ``token_type_ids``). Shapes are static, ``batch_size`` x
``sequence_length``: litert-torch 0.10 fails to convert a dynamic batch or sequence axis of
these models (see ``objectives.runtimes.litert``). Inputs are narrowed to int32 (litert-torch's
default: on-device runtimes seldom take int64); the session casts.

Quantization is done on the FP32 file, the two modes that keep activations in float:
``dynamic`` (INT8 channel-wise weights, activations quantized at run time for integer compute)
and ``weight_only`` (INT8 weights dequantized to FP32 at run time, float compute). Not offered:
litert-torch's own PT2E INT8, whose file the interpreter refuses (an EMBEDDING_LOOKUP zero
point), and full-integer static INT8, whose logits agreed with FP32 on ~52% of texts (issue 21).

The libraries narrate: litert-torch's progress (switched off), its note that int64 inputs become
int32, the quantizer's progress bars and size report, and native log lines on stderr. They are
kept off the terminal; warnings that are not these, and every error, still show.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch
from transformers import PreTrainedModel

from edgetune.objectives.build import Build
from edgetune.objectives.native_output import CHATTER, native_stderr_quiet
from edgetune.objectives.target import TargetConfig
from edgetune.objectives.traceable import Logits, example_inputs
from edgetune.spaces.knob import QuantizationScheme, Step
from edgetune.spaces.litert import LITERT_ONLY, LiteRtDynamic, LiteRtWeightOnly

QuantizationMode = Literal["dynamic", "weight_only"]
RECIPES = {"dynamic": "dynamic_wi8_afp32", "weight_only": "weight_only_wi8_afp32"}
PROGRESS = "LITERT_TORCH_SHOW_PROGRESS"  # what litert_torch.config.show_progress reads
# Importing litert-torch loads TensorFlow's and torchao's native libraries, which log their setup
# (and torchao its CUDA kernels, absent on a CPU build) to stderr.
IMPORT_CHATTER = (*CHATTER, "WARNING: All log messages before absl", "torchao/_C",
                  "is an Enum subclass")


class KeywordLogits(torch.nn.Module):
    """``Logits`` called with its inputs by keyword: the converted file's signature takes the
    names of ``forward``'s parameters, which ``keyword_logits`` sets to ``input_names``."""

    def __init__(self, logits: Logits) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        return self.logits(*(inputs[name] for name in self.logits.input_names))


def keyword_logits(model: PreTrainedModel, input_names: list[str]) -> KeywordLogits:
    """``model`` as a module whose ``forward`` has one parameter per input name: torch.export
    reads the parameters from the signature, and litert-torch names the inputs after them."""
    module_class = type("KeywordLogits", (KeywordLogits,), {
        "forward": lambda self, **inputs: KeywordLogits.forward(self, **inputs)})
    parameter = inspect.Parameter.POSITIONAL_OR_KEYWORD
    module_class.forward.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("self", parameter)]
        + [inspect.Parameter(name, parameter) for name in input_names])
    return module_class(Logits(model, input_names, additive_mask=True))


def compile_litert(model: PreTrainedModel, input_names: list[str], path: Path, batch_size: int,
                   sequence_length: int) -> Path:
    """Write ``model`` to ``path`` as a FP32 LiteRT file taking ``batch_size`` rows of
    ``sequence_length`` tokens, its inputs named ``input_names``."""
    # The converter is the `litert` extra's, and takes 17 s to import: imported when used.
    with native_stderr_quiet(IMPORT_CHATTER):
        import litert_torch

    model = model.eval()
    inputs = dict(zip(input_names, example_inputs(input_names, batch_size, sequence_length)))
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), _quiet_conversion():
        converted = litert_torch.convert(keyword_logits(model, input_names).eval(),
                                         sample_kwargs=inputs)
        converted.export(str(path))
    return path


def quantize_litert(fp32: Path, path: Path, mode: QuantizationMode) -> Path:
    """Write ``fp32`` (a FP32 LiteRT file) to ``path`` with INT8 weights: ``dynamic`` quantizes
    activations at run time, ``weight_only`` dequantizes the weights to compute in FP32."""
    with native_stderr_quiet(IMPORT_CHATTER):  # the `litert` extra's, imported when used
        from litert_quantizer import quantizer, recipe

    qt = quantizer.Quantizer(str(fp32))
    qt.load_quantization_recipe(getattr(recipe, RECIPES[mode])())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # export_model warns when it overwrites
    with _quiet_python_output():
        qt.quantize(enable_progress_bar=False, enable_progress_report=False).export_model(path)
    return path


class _DropInt64Note(logging.Filter):
    """litert-torch's warning that int64 inputs become int32: expected, the session casts."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "enable_x64" not in record.getMessage()


@contextlib.contextmanager
def _quiet_conversion() -> Iterator[None]:
    root, note = logging.getLogger(), _DropInt64Note()
    progress = os.environ.get(PROGRESS)
    os.environ[PROGRESS] = "n"
    root.addFilter(note)
    try:
        with warnings.catch_warnings(), native_stderr_quiet(), _quiet_python_output():
            warnings.simplefilter("ignore", FutureWarning)  # torch's pytree deprecations
            yield
    finally:
        root.removeFilter(note)
        if progress is None:
            os.environ.pop(PROGRESS, None)
        else:
            os.environ[PROGRESS] = progress


@contextlib.contextmanager
def _quiet_python_output() -> Iterator[None]:
    """Prints and progress bars of the block off the terminal; written out if the block fails."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            yield
    except BaseException:
        sys.stderr.write(captured.getvalue())
        raise


def compile_tflite(model: PreTrainedModel, input_names: list[str], path: Path,
                   target: TargetConfig) -> Path:
    """LiteRT's compile step (``objectives.runtimes.RUNTIMES``): FP32 at the target's shapes."""
    return compile_litert(model, input_names, path, target.batch_size, target.sequence_length)


def quantized(mode: QuantizationMode) -> Step:
    """The build step of a LiteRT scheme: the compiled FP32 file quantized in ``mode``."""

    def step(build: Build) -> None:
        assert build.model is not None
        quantize_litert(build.model, build.candidate.path, mode)
        build.model = build.candidate.path

    return step


DYNAMIC = QuantizationScheme(
    name="litert-dynamic", recipe=LiteRtDynamic, steps={"quantize": quantized("dynamic")},
    runtimes=LITERT_ONLY, colour="#17becf", symbol="triangle-down",
)
WEIGHT_ONLY = QuantizationScheme(
    name="litert-weight-only", recipe=LiteRtWeightOnly,
    steps={"quantize": quantized("weight_only")},
    runtimes=LITERT_ONLY, colour="#bcbd22", symbol="triangle-left",
)
