"""Pruning knob: which connections to remove from the fine-tuned model.

- ``structured`` removes whole attention heads, FFN neurons and encoder layers, so ONNX Runtime's
  dense kernels really do less work;
- ``unstructured`` zeroes the smallest weights by L1 magnitude (the classic
  ``torch.nn.utils.prune`` recipe): the zipped file shrinks, dense kernels run no faster.

Build step: ``edgetune.objectives.pruning``.
"""

from __future__ import annotations

from typing import Annotated, Literal

import optuna
from pydantic import Field

from edgetune.spaces.base import FloatRange, IntRange, Strict, suggest_choice

PruningMethod = Literal["none", "structured", "unstructured"]


class NoPruning(Strict):
    method: Literal["none"] = "none"

    def short(self) -> str:
        return ""


class StructuredPruning(Strict):
    method: Literal["structured"] = "structured"
    heads_kept: float = Field(gt=0, le=1, description="fraction of attention heads kept")
    ffn_kept: float = Field(gt=0, le=1, description="fraction of FFN neurons kept")
    layers_kept: int = Field(ge=1, description="number of encoder layers kept")

    def short(self) -> str:
        return f"heads{self.heads_kept:.2f}/ffn{self.ffn_kept:.2f}/L{self.layers_kept}"


class UnstructuredPruning(Strict):
    method: Literal["unstructured"] = "unstructured"
    ratio: float = Field(gt=0, lt=1, description="fraction of Linear weights zeroed (L1)")

    def short(self) -> str:
        return f"l1-{self.ratio:.2f}"


PruningRecipe = Annotated[
    NoPruning | StructuredPruning | UnstructuredPruning, Field(discriminator="method")
]


class FractionRange(FloatRange):
    """A fraction of a model part kept or removed: within (0, 1]."""

    low: float = Field(gt=0, le=1)
    high: float = Field(gt=0, le=1)


class RatioRange(FloatRange):
    """A ratio of weights removed: within [0, 1)."""

    low: float = Field(ge=0, lt=1)
    high: float = Field(ge=0, lt=1)


class StructuredSpace(Strict):
    heads_kept: FractionRange = FractionRange(low=0.5, high=1.0, step=0.25)
    ffn_kept: FractionRange = FractionRange(low=0.25, high=1.0, step=0.25)
    layers_kept: IntRange = IntRange(low=2, high=6)


class UnstructuredSpace(Strict):
    ratio: RatioRange = RatioRange(low=0.1, high=0.7, step=0.1)


class PruningSpace(Strict):
    methods: list[PruningMethod] = Field(
        default=["none", "structured", "unstructured"], min_length=1
    )
    structured: StructuredSpace = StructuredSpace()
    unstructured: UnstructuredSpace = UnstructuredSpace()

    def sample(self, trial: optuna.Trial) -> PruningRecipe:
        method = suggest_choice(trial, "pruning.method", self.methods)
        if method == "structured":
            space = self.structured
            return StructuredPruning(
                heads_kept=space.heads_kept.suggest(trial, "pruning.heads_kept"),
                ffn_kept=space.ffn_kept.suggest(trial, "pruning.ffn_kept"),
                layers_kept=space.layers_kept.suggest(trial, "pruning.layers_kept"),
            )
        if method == "unstructured":
            return UnstructuredPruning(
                ratio=self.unstructured.ratio.suggest(trial, "pruning.ratio")
            )
        return NoPruning()
