"""The whole search space: the knobs together, and the conditions between them."""

from __future__ import annotations

import optuna
from pydantic import Field

from edgetune.spaces.base import Strict, suggest_choice
from edgetune.spaces.graph import GraphSpace
from edgetune.spaces.knob import DEFAULT_RUNTIME
from edgetune.spaces.pruning import PruningSpace
from edgetune.spaces.quantization import QuantizationSpace
from edgetune.spaces.recipe import Recipe
from edgetune.spaces.recovery import RecoveryRecipe, RecoverySpace
from edgetune.spaces.registry import knob_of
from edgetune.spaces.vocabulary import VocabularyRecipe, VocabularySpace


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
    # None, the default, never trims; fingerprints leave it out then (``StudyConfig.fingerprint``).
    vocabulary: VocabularySpace | None = None
    runtime: list[str] | None = Field(
        default=None, min_length=1,
        description="the runtimes searched (objectives.runtimes.RUNTIMES names); unset: the "
                    "target's alone")

    def searches_runtimes(self, target_runtime: str) -> bool:
        """Whether the runtime is a searched knob here: ``runtime`` names another than the
        target's."""
        return self.runtime is not None and self.runtime != [target_runtime]

    def sample(self, trial: optuna.Trial, target_runtime: str = DEFAULT_RUNTIME) -> Recipe:
        """A recipe for ``target_runtime``, the study's, or for one of ``runtime`` where the space
        searches several.

        The quantization scheme is sampled among those that run on the recipe's runtime: in the
        target's as ``quantization.scheme``, in another as ``quantization.scheme.<runtime>``
        (Optuna fixes the choices of a parameter name).
        """
        runtime = target_runtime
        if self.searches_runtimes(target_runtime):
            runtime = suggest_choice(trial, "runtime", self.runtime)  # type: ignore[arg-type]
        pruning = self.pruning.sample(trial)
        # Recovery only means something after pruning: never sample it for an unpruned model.
        recovers = knob_of(pruning, "pruning").recovers
        recovery = self.recovery.sample(trial) if recovers else RecoveryRecipe(steps=0)
        scheme = None if runtime == target_runtime else f"quantization.scheme.{runtime}"
        quantization = self.quantization.sample(trial, runtime, scheme)
        graph = self.graph.sample(trial, quantization, runtime)
        vocabulary = (self.vocabulary.sample(trial, quantization) if self.vocabulary is not None
                      else VocabularyRecipe())
        return Recipe(pruning=pruning, recovery=recovery, quantization=quantization, graph=graph,
                      runtime=None if runtime == target_runtime else runtime,
                      vocabulary=vocabulary)
