"""A compression recipe: everything needed to rebuild one candidate, as plain data.

A recipe is stored on its Optuna trial as JSON and rebuilt from it (``Recipe.model_validate``),
so ``export`` can rebuild a candidate whose file was not kept.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from edgetune.spaces.base import Strict
from edgetune.spaces.graph import GraphRecipe, fusion_mode
from edgetune.spaces.knob import Knob
from edgetune.spaces.pruning import NoPruning, PruningRecipe
from edgetune.spaces.quantization import NoQuantization, QuantizationRecipe
from edgetune.spaces.recovery import RecoveryRecipe
from edgetune.spaces.registry import knob, knob_of
from edgetune.spaces.vocabulary import VocabularyRecipe, composes_with


class Recipe(Strict):
    pruning: PruningRecipe = Field(default_factory=NoPruning)
    recovery: RecoveryRecipe = Field(default_factory=lambda: RecoveryRecipe(steps=0))
    quantization: QuantizationRecipe = Field(default_factory=NoQuantization)
    graph: GraphRecipe = Field(default_factory=GraphRecipe)
    runtime: str | None = None  # compiled for this runtime; None: the study's (``target.runtime``)
    vocabulary: VocabularyRecipe = Field(default_factory=VocabularyRecipe)

    @model_validator(mode="after")
    def _buildable(self) -> Recipe:
        if self.graph.fusion and fusion_mode(self.quantization) == "none":
            raise ValueError(f"graph fusion does not compose with {self.quantization.short()}")
        if self.vocabulary.trim and not composes_with(self.quantization):
            raise ValueError(f"vocabulary trimming does not compose with "
                             f"{self.quantization.short()}")
        return self

    @model_serializer(mode="wrap")
    def _untrimmed_as_before(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Recipes stored before vocabulary trimming have no such key; an untrimmed recipe is
        # stored as they are, so a repeat of one is recognised (``search.repeats``).
        data: dict[str, Any] = handler(self)
        if not self.vocabulary.trim:
            del data["vocabulary"]
        return data

    def knobs(self) -> list[Knob]:
        """The knobs this recipe was sampled by: its pruning method, quantization scheme, the
        graph fusions where it fuses and vocabulary trimming where it trims."""
        chosen = [knob_of(self.pruning, "pruning"), knob_of(self.quantization, "quantization")]
        return chosen + ([knob("graph", "fusion")] if self.graph.fusion else []) + (
            [knob("vocabulary", "trim")] if self.vocabulary.trim else [])

    @property
    def is_reference(self) -> bool:
        """The FP32 reference: nothing pruned, quantized or fused, in the study's runtime."""
        return self == Recipe()

    def short(self) -> str:
        """A compact one-line description, such as
        ``heads0.50/ffn0.50/L4+rec50+kd · fused · dyn-int8``."""
        if self.is_reference:
            return "fp32 reference"
        prune = "+".join(p for p in (self.pruning.short(), self.recovery.short()) if p)
        parts = [self.runtime or "", prune, self.vocabulary.short(), self.graph.short(),
                 self.quantization.short()]
        return " · ".join(p for p in parts if p)
