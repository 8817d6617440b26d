"""The runtimes edgetune times, scores and ships models in (the seam: ``runtimes.base``)."""

from __future__ import annotations

from edgetune.objectives.runtimes.base import Runtime
from edgetune.objectives.runtimes.onnxruntime import OnnxRuntime
from edgetune.objectives.target import TargetConfig

RUNTIMES: dict[str, Runtime] = {runtime.name: runtime for runtime in (OnnxRuntime(),)}
DEFAULT = "onnxruntime"


def for_target(target: TargetConfig) -> Runtime:
    """The runtime ``target``'s models run in: ONNX Runtime's CPU provider, the one runtime
    edgetune has so far."""
    return RUNTIMES[DEFAULT]
