"""The whole search space: the knobs together, and the conditions between them."""

from __future__ import annotations

import optuna
from pydantic import Field

from edgetune.spaces.base import Strict
from edgetune.spaces.graph import GraphSpace
from edgetune.spaces.pruning import PruningSpace
from edgetune.spaces.quantization import QuantizationSpace
from edgetune.spaces.recipe import Recipe
from edgetune.spaces.recovery import RecoveryRecipe, RecoverySpace
from edgetune.spaces.registry import knob_of


class SearchSpace(Strict):
    """The ``space:`` section of a study config.

    Example:
        >>> import optuna
        >>> space = SearchSpace.model_validate({"pruning": {"methods": ["none"]}})
        >>> study = optuna.create_study(directions=["maximize", "minimize"])
        >>> recipe = space.sample(study.ask())
        >>> recipe.pruning.method
        'none'
    """

    # Factories: a slot's defaults are those of the knobs registered when a config is read.
    pruning: PruningSpace = Field(default_factory=PruningSpace)
    recovery: RecoverySpace = RecoverySpace()
    quantization: QuantizationSpace = Field(default_factory=QuantizationSpace)
    graph: GraphSpace = GraphSpace()

    def sample(self, trial: optuna.Trial) -> Recipe:
        pruning = self.pruning.sample(trial)
        # Recovery only means something after pruning: never sample it for an unpruned model.
        recovers = knob_of(pruning, "pruning").recovers
        recovery = self.recovery.sample(trial) if recovers else RecoveryRecipe(steps=0)
        quantization = self.quantization.sample(trial)
        graph = self.graph.sample(trial, quantization)
        return Recipe(pruning=pruning, recovery=recovery, quantization=quantization, graph=graph)
