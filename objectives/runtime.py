"""ONNX Runtime sessions with the target device's settings, shared by every measurement."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import onnxruntime as ort
from pydantic import Field

from edgetune.spaces.base import Strict

# Errors only, for the sessions that ONNX Runtime's quantization tools and NNCF open themselves:
# their warnings (unused initializers of the exported graph) flood a study's output.
ort.set_default_logger_severity(3)

GRAPH_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


class TargetConfig(Strict):
    """The ``target:`` section: the device a model is measured for (not searched)."""

    threads: int = Field(default=2, ge=1, description="intra-op threads: the device's cores")
    batch_size: int = Field(default=1, ge=1)
    sequence_length: int = Field(default=128, ge=1)
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"


def session(model: Path, target: TargetConfig) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = target.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = GRAPH_LEVELS[target.graph_optimization]
    options.log_severity_level = 3
    # Models are timed beside each other (the FP32 reference, other candidates): an idle model's
    # pool must not spin on the cores the next model runs on. Spinning resumes with each run.
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def feeds(sess: ort.InferenceSession, inputs: dict, rows: slice) -> dict:
    """The model's own inputs from ``inputs`` (DistilBERT, say, takes no token_type_ids)."""
    return {i.name: inputs[i.name][rows] for i in sess.get_inputs()}
