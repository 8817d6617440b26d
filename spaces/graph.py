"""Graph knob: ONNX Runtime's transformer optimizer fuses attention, LayerNorm and GELU.

A large fixed win on CPU that must compose with quantization. The fusions run on the FP32 graph
before post-training quantization; each quantization scheme declares how it composes with them
(``Knob.fusion``), and the search samples fusion only where it does.
Build step and knob declaration: ``edgetune.objectives.graph``.
"""

from __future__ import annotations

import optuna
from pydantic import Field

from edgetune.spaces.base import Strict, suggest_choice
from edgetune.spaces.knob import DEFAULT_RUNTIME, FusionMode
from edgetune.spaces.registry import knob, knob_of


class GraphRecipe(Strict):
    fusion: bool = False

    def short(self) -> str:
        return "fused" if self.fusion else ""


def fusion_mode(quantization: Strict) -> FusionMode:
    """How the fusions compose with ``quantization``, as its scheme declares: for instance not
    with NNCF on ONNX, whose graph analysis fails on the fused contrib ops."""
    return knob_of(quantization, "quantization").fusion(quantization)


class GraphSpace(Strict):
    fusion: list[bool] = Field(default=[True, False], min_length=1)

    def sample(self, trial: optuna.Trial, quantization: Strict,
               runtime: str = DEFAULT_RUNTIME) -> GraphRecipe:
        if fusion_mode(quantization) == "none" or not knob("graph", "fusion").runs_on(runtime):
            return GraphRecipe()
        return GraphRecipe(fusion=suggest_choice(trial, "graph.fusion", self.fusion))
