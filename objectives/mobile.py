"""ONNX Runtime's ORT format for mobile and reduced builds, made with ONNX Runtime's own converter.

The converter optimises the graph as the CPU provider would at load and saves it as a flatbuffer
that the minimal (mobile) runtime reads, plus the list of operators the model needs, which
``build.sh --minimal_build --include_ops_by_config`` takes to build a runtime holding only those.
The "Fixed" optimisation style suits the CPU provider (the "Runtime" style is for compiling
providers such as NNAPI or CoreML), and no target platform is named, so no x86-only layout
(NCHWc) is baked in and the file runs on ARM and x86 alike.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

from onnxruntime.tools.convert_onnx_models_to_ort import (
    OptimizationStyle,
    convert_onnx_models_to_ort,
)

ORT_SUFFIX = ".ort"
OPERATORS_SUFFIX = ".required_operators.config"


def to_ort_format(model: Path) -> tuple[Path, Path]:
    """Write ``model``'s ORT format file and required-operators config beside it."""
    logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)
    with contextlib.redirect_stdout(io.StringIO()):  # the converter narrates every step
        convert_onnx_models_to_ort(model, output_dir=model.parent,
                                   optimization_styles=[OptimizationStyle.Fixed])
    ort_file = model.with_suffix(ORT_SUFFIX)
    operators = model.with_suffix(OPERATORS_SUFFIX)
    # The config's header names the model by its absolute path at conversion time; the folder
    # is then moved or shipped, so name it relative to the config instead.
    operators.write_text(operators.read_text().replace(f"{model.parent.resolve()}/", ""))
    return ort_file, operators
