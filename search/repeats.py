"""Recipes a study has already measured: a trial that samples one again is pruned at once.

Samplers choose from discrete knobs, and late in a study TPE often draws again a recipe an earlier
trial built (the FP32 reference and the dynamic INT8 baselines most of all: they sit at the ends
of the front it models). Building is deterministic from the recipe, so a second build would spend
the trial's minutes to learn nothing but measurement noise (``edgetune confirm`` is the place to
re-measure). As the Optuna FAQ suggests ("How can I ignore duplicated samples?"), such a trial is
pruned, pointing to the trial that holds the figures, with that trial's constraint values, so a
sampler counts it as feasible or not as it counted the original.

A repeat does not count toward the study's budget (``edgetune.search.run``): a budget of 40 trials
is 40 candidates measured. Samplers that have converged, or a space with fewer recipes than the
budget, would then repeat without end, so a run stops once the study's last
``MAX_REPEATS_IN_A_ROW`` finished trials are all repeats.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from edgetune.search import constraints
from edgetune.search.record import DUPLICATE_OF, PRUNED, RECIPE

# Repeats cost under a second each, and a sampler that still explores proposes a new recipe after
# a few (benchmarks/RESULTS.md, search): a run of 20 means it has nothing new to propose.
MAX_REPEATS_IN_A_ROW = 20
CONVERGED = (f"[yellow]stopped before the budget[/yellow]: the last {MAX_REPEATS_IN_A_ROW} "
             "trials all repeated recipes already measured (the sampler has converged, or the "
             "space holds fewer recipes than the budget)")


def is_repeat(trial: FrozenTrial) -> bool:
    return DUPLICATE_OF in trial.user_attrs


def repeats_in_a_row(trials: list[FrozenTrial]) -> int:
    """How many of the last finished trials (by number) are repeats, up to the last new one."""
    finished = sorted((t for t in trials if t.state.is_finished()), key=lambda t: t.number)
    count = 0
    for trial in reversed(finished):
        if not is_repeat(trial):
            break
        count += 1
    return count


def earlier_trial(trial: optuna.Trial) -> FrozenTrial | None:
    """The first finished trial with exactly ``trial``'s recipe (user attr ``recipe``, set before
    this is asked): complete, or stopped early by the accuracy floor (the same recipe would be
    stopped again). A failed trial is not one: its failure may have been the machine's.

    Recipes, not parameters, are compared: they are what is built, and parameters that build
    the same model (structured pruning that removes nothing, ``spaces.pruning``) make a repeat.
    """
    recipe = trial.user_attrs[RECIPE]
    for other in trial.study.get_trials(deepcopy=False,
                                        states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if (other.number != trial.number and other.user_attrs.get(RECIPE) == recipe
                and not is_repeat(other)):
            return other
    return None


def prune_as_duplicate(trial: optuna.Trial, original: FrozenTrial) -> None:
    """Record ``trial`` as a repeat of ``original`` and stop it (raises ``TrialPruned``)."""
    trial.set_user_attr(DUPLICATE_OF, original.number)
    trial.set_user_attr(PRUNED, {"stage": "sample",
                                   "reason": f"same recipe as trial {original.number}, "
                                             "whose figures stand for it"})
    constraints.set_constraints(trial, original.constraints)
    raise optuna.TrialPruned(f"same recipe as trial {original.number}")
