"""Channel pruning's recipe and search space (``space.pruning.channels``): the fraction of the
channels kept in each stage of a convolutional image classifier.

A stage is the run of layers between two downsamplings: the layers a forward pass runs after the
stem's strided convolution and before the next strided one form stage 0, and so on (the build
step, ``edgetune.objectives.channels``, finds them). ResNet and ConvNeXt have four such stages;
MobileNetV2 and EfficientNet have five resolution levels. ``STAGES`` fractions are sampled, the
last applying to every deeper stage as well: a fixed count keeps the search's parameters the same
whatever the model (the space is sampled without loading it), and the deepest stages, which hold
most of a CNN's weights but work on the smallest feature maps, share one choice.

Build step and knob declaration: ``edgetune.objectives.channels``, ``edgetune.objectives.pruning``.
"""

from __future__ import annotations

from typing import Annotated, Literal

import optuna
from pydantic import Field

from edgetune.spaces.base import Strict, suggest_choice
from edgetune.spaces.pruning import FractionRange, NoPruning

# The model types whose channels Torch-Pruning prunes and whose pruned checkpoints load again
# (tests/test_channels.py): the convolutional image classifiers of transformers that edgetune
# tests.
CHANNEL_PRUNABLE = frozenset({"convnext", "efficientnet", "mobilenet_v2", "resnet"})
STAGES = 4  # fractions sampled; the last one also applies to any deeper stage

Fraction = Annotated[float, Field(gt=0, le=1)]
# How a channel's importance is measured: the L2 norm of the weights it owns, or the first-order
# Taylor estimate of the loss change its removal causes (|weight x gradient|, on train images).
Importance = Literal["magnitude", "taylor"]


class ChannelPruning(Strict):
    """Output channels removed from every convolution (and the layers coupled with it), the least
    important first, keeping ``kept[i]`` of each stage ``i``."""

    method: Literal["channels"] = "channels"
    kept: tuple[Fraction, ...] = Field(min_length=STAGES, max_length=STAGES,
                                       description="fraction of channels kept, per stage")
    importance: Importance = "magnitude"

    def short(self) -> str:
        ranked = "" if self.importance == "magnitude" else f"-{self.importance}"
        return "ch" + "/".join(f"{kept:.2f}" for kept in self.kept) + ranked

    def no_larger_than(self, other: object) -> bool:
        """Whether this recipe keeps at most ``other``'s fraction of every stage's channels."""
        return isinstance(other, ChannelPruning) and all(
            mine <= theirs for mine, theirs in zip(self.kept, other.kept, strict=True))


class ChannelsSpace(Strict):
    """Each stage's fraction is sampled as ``pruning.channels.stage<i>`` from ``kept``, then the
    importance as ``pruning.channels.importance``.

    ``importance`` is ``[magnitude]`` by default: Taylor importance costs a backward pass over
    train images and has not been measured against magnitude on an image task here; a config
    opts in with ``[magnitude, taylor]``.
    """

    kept: FractionRange = FractionRange(low=0.5, high=1.0, step=0.25)
    importance: list[Importance] = Field(default=["magnitude"], min_length=1)

    def sample(self, trial: optuna.Trial) -> ChannelPruning | NoPruning:
        """A channel recipe, or no pruning when every stage keeps all of its channels: that is
        the unpruned model, built without a recovery to recover from nothing."""
        kept = tuple(self.kept.suggest(trial, f"pruning.channels.stage{i}")
                     for i in range(STAGES))
        if all(fraction == 1 for fraction in kept):
            return NoPruning()
        return ChannelPruning(kept=kept, importance=suggest_choice(
            trial, "pruning.channels.importance", self.importance))
