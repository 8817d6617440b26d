"""Recipes a study has already measured: a trial that samples one again is pruned at once.

Samplers choose from discrete knobs, and late in a study TPE often draws again a recipe an earlier
trial built (the FP32 reference and the dynamic INT8 baselines most of all: they sit at the ends
of the front it models). Building is deterministic from the recipe, so a second build would spend
the trial's minutes to learn nothing but measurement noise (``edgetune confirm`` is the place to
re-measure). As the Optuna FAQ suggests ("How can I ignore duplicated samples?"), such a trial is
pruned, pointing to the trial that holds the figures, with that trial's constraint values, so a
sampler counts it as feasible or not as it counted the original.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from edgetune.search import constraints

DUPLICATE_OF = "duplicate_of"  # trial user attr: the number of the trial with the same recipe


def earlier_trial(trial: optuna.Trial) -> FrozenTrial | None:
    """The first finished trial that sampled exactly ``trial``'s parameters: complete, or stopped
    early by the accuracy floor (the same recipe would be stopped again). A failed trial is
    not one: its failure may have been the machine's."""
    for other in trial.study.get_trials(deepcopy=False,
                                        states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if (other.number != trial.number and other.params == trial.params
                and DUPLICATE_OF not in other.user_attrs):
            return other
    return None


def prune_as_duplicate(trial: optuna.Trial, original: FrozenTrial) -> None:
    """Record ``trial`` as a repeat of ``original`` and stop it (raises ``TrialPruned``)."""
    trial.set_user_attr(DUPLICATE_OF, original.number)
    trial.set_user_attr("pruned", {"stage": "sample",
                                   "reason": f"same recipe as trial {original.number}, "
                                             "whose figures stand for it"})
    constraints.set_constraints(trial, original.constraints)
    raise optuna.TrialPruned(f"same recipe as trial {original.number}")
