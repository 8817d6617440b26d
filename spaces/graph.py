"""Graph knob: ONNX Runtime's transformer optimizer fuses attention, LayerNorm and GELU.

A large fixed win on CPU that must compose with quantization. Build step:
``edgetune.objectives.graph``.
"""

from __future__ import annotations

import optuna
from pydantic import Field

from edgetune.spaces.base import Strict, suggest_choice


class GraphRecipe(Strict):
    fusion: bool = False

    def short(self) -> str:
        return "fused" if self.fusion else ""


class GraphSpace(Strict):
    fusion: list[bool] = Field(default=[True, False], min_length=1)

    def sample(self, trial: optuna.Trial) -> GraphRecipe:
        return GraphRecipe(fusion=suggest_choice(trial, "graph.fusion", self.fusion))
