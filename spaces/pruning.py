"""Pruning knob: which connections to remove from the fine-tuned model.

- ``structured`` removes whole attention heads, FFN neurons, encoder layers and hidden (residual
  stream) channels, so ONNX Runtime's dense kernels really do less work;
- ``unstructured`` zeroes the smallest weights by L1 magnitude (the classic
  ``torch.nn.utils.prune`` recipe): the zipped file shrinks, dense kernels run no faster.

Build step and knob declarations: ``edgetune.objectives.pruning``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import optuna
from pydantic import Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from edgetune.spaces.base import (
    CountRange,
    FloatRange,
    Strict,
    suggest_choice,
    without_default,
)
from edgetune.spaces.registry import SlotSpace, recipe_of

Scope = Literal["layer", "global"]
LayerSelection = Literal["even", "importance"]


class NoPruning(Strict):
    method: Literal["none"] = "none"

    def short(self) -> str:
        return ""

    def no_larger_than(self, other: object) -> bool:
        """Whether this recipe's model is pruned at least as far as ``other``'s on every axis:
        what ``search.rungs`` compares recoveries by."""
        return isinstance(other, NoPruning)


class StructuredPruning(Strict):
    """Heads and FFN neurons ranked by weight magnitude; whole encoder layers dropped.

    ``scope: layer`` keeps the same fraction in every layer; ``global`` ranks heads (and neurons)
    of all layers together, so layers whose weights matter less give up more, never all.
    ``layer_selection: even`` keeps evenly spaced layers; ``importance`` drops the layers whose
    removal raises the loss least on a sample of the train split (measured, see the build step).
    Each is set exactly when it changes the result: ``scope`` when heads or neurons are pruned,
    ``layer_selection`` when layers are dropped.

    ``hidden_kept`` narrows the residual stream of the whole model (width pruning, after the
    rest): its channels are ranked once, by activation on train rows, so it has no ``scope``.
    It is stored only when below 1, so recipes that keep the full width keep the JSON, cache keys
    and repeat detection of the studies recorded before it existed.
    """

    method: Literal["structured"] = "structured"
    heads_kept: float = Field(default=1.0, gt=0, le=1, description="fraction of heads kept")
    ffn_kept: float = Field(default=1.0, gt=0, le=1, description="fraction of FFN neurons kept")
    scope: Scope | None = Field(default=None, description="per-layer or global ranking")
    layers_dropped: int = Field(default=0, ge=0, description="encoder layers removed")
    layer_selection: LayerSelection | None = Field(default=None, description="which layers go")
    hidden_kept: float = Field(default=1.0, gt=0, le=1,
                               description="fraction of hidden (residual stream) channels kept")

    @model_validator(mode="after")
    def _settings_match_what_is_pruned(self) -> StructuredPruning:
        prunes_within = self.heads_kept < 1 or self.ffn_kept < 1
        if prunes_within != (self.scope is not None):
            raise ValueError("scope is set exactly when heads_kept or ffn_kept is below 1")
        if (self.layers_dropped > 0) != (self.layer_selection is not None):
            raise ValueError("layer_selection is set exactly when layers_dropped is above 0")
        return self

    @model_serializer(mode="wrap")
    def _full_width_unstored(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        return without_default(handler(self), "hidden_kept", self.hidden_kept == 1)

    def short(self) -> str:
        parts = []
        if self.layers_dropped:
            parts.append(f"drop{self.layers_dropped}L-{self.layer_selection}")
        if self.scope is not None:
            parts.append(f"heads{self.heads_kept:.2f}/ffn{self.ffn_kept:.2f}-{self.scope}")
        if self.hidden_kept < 1:
            parts.append(f"hid{self.hidden_kept:.2f}")
        return "/".join(parts) or "structured-none"

    def no_larger_than(self, other: object) -> bool:
        """Whether this recipe's model is pruned at least as far as ``other``'s on every axis
        (layers, heads, FFN neurons, width), whichever ones it picks."""
        return (isinstance(other, StructuredPruning)
                and self.layers_dropped >= other.layers_dropped
                and self.heads_kept <= other.heads_kept and self.ffn_kept <= other.ffn_kept
                and self.hidden_kept <= other.hidden_kept)


class UnstructuredPruning(Strict):
    method: Literal["unstructured"] = "unstructured"
    ratio: float = Field(gt=0, lt=1, description="fraction of Linear weights zeroed (L1)")

    def short(self) -> str:
        return f"l1-{self.ratio:.2f}"

    def no_larger_than(self, other: object) -> bool:
        """Whether this recipe zeroes at least as many weights as ``other``'s."""
        return isinstance(other, UnstructuredPruning) and self.ratio >= other.ratio


PruningRecipe = recipe_of("pruning")  # the recipe of any registered pruning method


class FractionRange(FloatRange):
    """A fraction of a model part kept or removed: within (0, 1]."""

    low: float = Field(gt=0, le=1)
    high: float = Field(gt=0, le=1)


class RatioRange(FloatRange):
    """A ratio of weights removed: within (0, 1)."""

    low: float = Field(gt=0, lt=1)
    high: float = Field(gt=0, lt=1)


class StructuredSpace(Strict):
    """Defaults from ``benchmarks/pruning.py`` on the default task (benchmarks/RESULTS.md): dropping
    layers buys the most speed per point of accuracy (3 of 6 kept: 0.25x FP32, -0.0 pt test);
    halving heads and FFN costs 1.6 pt for 0.34x, so no lower fraction is searched by default.

    ``hidden_kept`` (width pruning) is off by default, [1.0, 1.0]: searching it by default would
    change every config's fingerprint, and so refuse to resume their studies. A config opts in
    with a range such as ``{low: 0.5, high: 1.0, step: 0.25}``; it is sampled only then.
    """

    heads_kept: FractionRange = FractionRange(low=0.5, high=1.0, step=0.25)
    ffn_kept: FractionRange = FractionRange(low=0.5, high=1.0, step=0.25)
    scope: list[Scope] = Field(default=["layer", "global"], min_length=1)
    # A count dropped rather than kept, so that "no layer dropped" is known when sampling and
    # layer_selection is sampled only when it matters; the run checks it against the model.
    layers_dropped: CountRange = CountRange(low=0, high=4)
    layer_selection: list[LayerSelection] = Field(default=["importance", "even"], min_length=1)
    hidden_kept: FractionRange = FractionRange(low=1.0, high=1.0)

    @model_serializer(mode="wrap")
    def _width_off_unstored(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        return without_default(handler(self), "hidden_kept",
                               self.hidden_kept == FractionRange(low=1.0, high=1.0))

    @property
    def searches_width(self) -> bool:
        """Whether ``pruning.hidden_kept`` is sampled: not while the range keeps the full width,
        so that the studies of configs without it sample (and are seeded) as before."""
        return self.hidden_kept.low < 1

    def sample(self, trial: optuna.Trial) -> StructuredPruning | NoPruning:
        """A structured recipe, or no pruning when the sampled one would remove nothing: that is
        the unpruned model, built without a recovery to recover from nothing (and a repeat, in a
        study that measured the unpruned model with the same quantization)."""
        heads_kept = self.heads_kept.suggest(trial, "pruning.heads_kept")
        ffn_kept = self.ffn_kept.suggest(trial, "pruning.ffn_kept")
        layers_dropped = self.layers_dropped.suggest(trial, "pruning.layers_dropped")
        hidden_kept = (self.hidden_kept.suggest(trial, "pruning.hidden_kept")
                       if self.searches_width else 1.0)
        if heads_kept == 1 and ffn_kept == 1 and layers_dropped == 0 and hidden_kept == 1:
            return NoPruning()
        return StructuredPruning(
            heads_kept=heads_kept,
            ffn_kept=ffn_kept,
            scope=suggest_choice(trial, "pruning.scope", self.scope)
            if heads_kept < 1 or ffn_kept < 1 else None,
            layers_dropped=layers_dropped,
            layer_selection=suggest_choice(trial, "pruning.layer_selection", self.layer_selection)
            if layers_dropped else None,
            hidden_kept=hidden_kept,
        )


class UnstructuredSpace(Strict):
    ratio: RatioRange = RatioRange(low=0.1, high=0.7, step=0.1)

    def sample(self, trial: optuna.Trial) -> UnstructuredPruning:
        return UnstructuredPruning(ratio=self.ratio.suggest(trial, "pruning.ratio"))


class PruningSpace(SlotSpace):
    """The ``space.pruning`` section: the methods searched, and a section per method
    (``structured``, ``unstructured``, ``channels``)."""

    slot: ClassVar = "pruning"
    choice: ClassVar = "methods"
    methods: list[str] = Field(default=["none", "structured", "unstructured"], min_length=1)

    @model_serializer(mode="wrap")
    def _channels_unstored_unless_chosen(self, handler: SerializerFunctionWrapHandler,
                                         ) -> dict[str, object]:
        """Channel pruning came after studies were stored: its section, at its defaults and not
        chosen, is left out of the dump, so that those configs keep their fingerprints."""
        section = self.section("channels")
        return without_default(handler(self), "channels",
                               "channels" not in self.methods and section == type(section)())
