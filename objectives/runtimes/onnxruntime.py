"""ONNX Runtime's CPU execution provider: edgetune's first runtime, and the only module that opens
ONNX Runtime inference sessions.

Deployment files are ONNX Runtime's ORT format for mobile and reduced builds, made with its own
converter: it optimises the graph as the CPU provider would at load and saves it as a flatbuffer
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

import numpy as np
import onnxruntime as ort

from edgetune.objectives.runtimes.base import Batch, InputSpec, Runtime, Session
from edgetune.objectives.target import TargetConfig

# Errors only, for the sessions that ONNX Runtime's quantization tools and NNCF open themselves:
# their warnings (unused initializers of the exported graph) flood a study's output.
ort.set_default_logger_severity(3)

GRAPH_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
NUMPY_TYPES: dict[str, type[np.generic]] = {
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32,
    "tensor(float16)": np.float16, "tensor(bool)": np.bool_,
}
ORT_SUFFIX = ".ort"
OPERATORS_SUFFIX = ".required_operators.config"


class OrtSession(Session):
    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session
        self._names = [i.name for i in session.get_inputs()]

    @property
    def inputs(self) -> list[InputSpec]:
        return [InputSpec(i.name, tuple(i.shape), NUMPY_TYPES.get(i.type), i.type)
                for i in self.session.get_inputs()]

    def bind(self, batch: Batch) -> dict[str, np.ndarray]:
        return {name: batch[name] for name in self._names}

    def run(self, bound: object) -> np.ndarray:
        return self.session.run(None, bound)[0]  # type: ignore[arg-type]


class OnnxRuntime(Runtime):
    def open(self, model: Path, target: TargetConfig) -> OrtSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = target.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = GRAPH_LEVELS[target.graph_optimization]
        options.log_severity_level = 3
        # Models are timed beside each other (the FP32 reference, other candidates): an idle
        # model's pool must not spin on the cores the next model runs on. Spinning resumes with
        # each run.
        options.add_session_config_entry("session.force_spinning_stop", "1")
        return OrtSession(ort.InferenceSession(str(model), options,
                                               providers=["CPUExecutionProvider"]))

    def version(self) -> str:
        return ort.__version__

    def files_section(self, model: Path, deploy_files: list[Path]) -> str:
        ort_file, operators = deploy_files
        return "\n".join([
            f"- `{model.name}`: the model. Inputs are what the folder's tokenizer (int64 token "
            "ids) or image\n  processor (float32 `pixel_values`) makes; the output `logits` has "
            "one column per label,\n  in the order of `labels.json`.",
            f"- `{ort_file.name}`: the same model in ONNX Runtime's ORT format, for the mobile "
            "packages\n  (onnxruntime-android, onnxruntime-objc) and minimal builds.",
            f"- `{operators.name}`: the operators it needs, for a reduced ONNX Runtime build:\n"
            f"  `./build.sh --minimal_build --include_ops_by_config {operators.name}`.",
        ])

    def usage(self, model: Path, texts: str) -> str:
        return f"""With only ONNX Runtime and transformers:

```python
import json

import numpy as np
import onnxruntime as ort
from transformers import AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained(".")
labels = json.load(open("labels.json"))
session = ort.InferenceSession("{model.name}", providers=["CPUExecutionProvider"])
batch = tokenizer({texts}, truncation=True, padding=True, return_tensors="np")
inputs = {{i.name: batch[i.name].astype(np.int64) for i in session.get_inputs()}}
logits = session.run(None, inputs)[0]
print([labels[i] for i in logits.argmax(axis=1)])
```"""

    def deploy_files(self, model: Path) -> list[Path]:
        """``model.ort`` and ``model.required_operators.config`` beside ``model``."""
        # Imported here, not at the top: the converter's package imports torch, which reading a
        # study (``edgetune status``) should not load.
        from onnxruntime.tools.convert_onnx_models_to_ort import (
            OptimizationStyle,
            convert_onnx_models_to_ort,
        )

        logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)
        with contextlib.redirect_stdout(io.StringIO()):  # the converter narrates every step
            convert_onnx_models_to_ort(model, output_dir=model.parent,
                                       optimization_styles=[OptimizationStyle.Fixed])
        operators = model.with_suffix(OPERATORS_SUFFIX)
        # The config's header names the model by its absolute path at conversion time; the
        # folder is then moved or shipped, so name it relative to the config instead.
        operators.write_text(operators.read_text().replace(f"{model.parent.resolve()}/", ""))
        return [model.with_suffix(ORT_SUFFIX), operators]
