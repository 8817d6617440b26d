"""Graph knob: ONNX Runtime's transformer optimizer fuses attention, LayerNorm and GELU.

A large fixed win on CPU that must compose with quantization. The fusions run on the FP32 graph
before post-training quantization (``edgetune.objectives.candidate``); ``fusion_composes`` says
for which quantization recipes that order builds, and the search samples fusion only for those.
Build step: ``edgetune.objectives.graph``.
"""

from __future__ import annotations

import optuna
from pydantic import Field

from edgetune.spaces.base import Strict, suggest_choice
from edgetune.spaces.qat import QatRecipe
from edgetune.spaces.quantization import NncfQuantization, QuantizationRecipe


class GraphRecipe(Strict):
    fusion: bool = False

    def short(self) -> str:
        return "fused" if self.fusion else ""


def fusion_composes(quantization: QuantizationRecipe) -> bool:
    """Whether a fused graph can be built with ``quantization``.

    Not with NNCF on ONNX, whose graph analysis fails on the fused contrib ops, nor with QAT's
    ``qdq`` export, which writes its own Q/DQ graph from torch.
    """
    if isinstance(quantization, NncfQuantization):
        return False
    return not (isinstance(quantization, QatRecipe) and quantization.export == "qdq")


class GraphSpace(Strict):
    fusion: list[bool] = Field(default=[True, False], min_length=1)

    def sample(self, trial: optuna.Trial, quantization: QuantizationRecipe) -> GraphRecipe:
        if not fusion_composes(quantization):
            return GraphRecipe()
        return GraphRecipe(fusion=suggest_choice(trial, "graph.fusion", self.fusion))
