"""Recoveries compared at equal steps (``search.rungs``, off by default): a recovery that falls
behind one of an earlier, at least as small candidate is stopped.

Recovery after pruning is most of a study's training time, and most recoveries end off the front.
What decides whether a candidate can reach the front is known long before its recovery ends:

- Two candidates whose recipes differ only in pruning and recovery, one pruned at least as far
  as the other on every axis (``no_larger_than`` on the pruning recipe: layers, heads, FFN
  neurons, width, channels), run at most as slowly, the smaller one at worst as fast. The larger
  one is worth finishing only if it ends more accurate.
- At each rung (a step count of the recovery, ``search.rungs``), the recovering model is scored
  on the validation split, the data the objective scores. It is compared with what every
  earlier such candidate scored at the same step: compared at equal steps, both have had the
  same training, and the late gains of a recovery whose learning rate decays to zero, which made
  forecasting to the floor unsafe (``edgetune.search.early_stopping``), come to both.
- A recovery more than the validation noise (``noise_margin``, one standard error) behind the
  best of them is stopped: Optuna's PRUNED, with the step, both scores and the trial it fell
  behind. Each trial keeps the scores of its rungs (user attr ``rungs``), so later trials, and
  other workers of the same study, compare with them.

This is successive halving's rule (candidates compared at equal budgets, the weaker stopped)
restricted to candidates that are comparable by construction. Optuna's own pruners do not fit:
``Trial.report`` refuses multi-objective studies, and its pruners compare with every trial, the
fast and the slow alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import optuna
import torch
from optuna.trial import FrozenTrial

from edgetune.search.early_stopping import noise_margin
from edgetune.search.record import RECIPE, RUNGS
from edgetune.spaces.pruning import NoPruning
from edgetune.spaces.recipe import Recipe
from edgetune.spaces.recovery import RecoveryRecipe

RECORD = RUNGS  # trial user attr: ``Rungs.record()``


def no_larger_than(smaller: Recipe, larger: Recipe) -> bool:
    """Whether ``smaller`` builds a model at most as large as ``larger``'s: the same recipe but
    for pruning and recovery, pruned at least as far on every axis."""
    unpruned = {"pruning": NoPruning(), "recovery": RecoveryRecipe(steps=0)}
    if smaller.model_copy(update=unpruned) != larger.model_copy(update=unpruned):
        return False
    compare = getattr(smaller.pruning, "no_larger_than", None)
    # A pruning plug-in that cannot order its recipes is compared with its own recipe only.
    return compare(larger.pruning) if compare else smaller.pruning == larger.pruning


def rung_scores(trial: FrozenTrial) -> dict[int, float]:
    """The validation score ``trial``'s recovery had at each rung it reached."""
    return {int(step): score for step, score in
            (trial.user_attrs.get(RECORD) or {}).get("scores", {}).items()}


def peers_of(recipe: Recipe, trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """The ``trials`` with rung scores whose recipe is no larger than ``recipe``."""
    return [trial for trial in trials
            if rung_scores(trial) and RECIPE in trial.user_attrs
            and no_larger_than(Recipe.model_validate(trial.user_attrs[RECIPE]), recipe)]


class Rungs:
    """A training callback, called after every step, that scores the recovery at each rung and
    stops it behind a peer.

    ``peers()`` gives the earlier trials to compare with (``peers_of``), read again at each rung
    so that trials finished meanwhile by other workers count. ``keep(record)`` stores the record
    on the trial after each rung, so a crash keeps what was scored. Only the first training
    phase, the recovery, is looked at.
    """

    def __init__(self, rungs: Iterable[int], recovery_steps: int,
                 peers: Callable[[], list[FrozenTrial]],
                 evaluate: Callable[[torch.nn.Module], float], samples: int,
                 keep: Callable[[dict[str, object]], None]) -> None:
        self.rungs = {step for step in rungs if step <= recovery_steps}
        self.peers = peers
        self.evaluate = evaluate
        self.samples = samples
        self.keep = keep
        self.scores: dict[int, float] = {}
        self.seconds = 0.0
        self.reason: str | None = None
        self._last_step = 0

    def __call__(self, step: int, model: torch.nn.Module) -> None:
        if step <= self._last_step:  # a later training phase began: recovery is over
            self.rungs = set()
        self._last_step = step
        if step not in self.rungs:
            return
        start = time.perf_counter()
        score = self.evaluate(model)
        self.seconds += time.perf_counter() - start
        self.scores[step] = score
        ahead = [(scores[step], peer.number) for peer in self.peers()
                 if step in (scores := rung_scores(peer))]
        if ahead:
            best, number = max(ahead)
            margin = noise_margin(best, self.samples)
            if score + margin < best:
                self.reason = (
                    f"recovery step {step}: validation {score:.2%}, more than the validation "
                    f"noise ({margin:.2%}) behind trial {number}'s {best:.2%} at the same step, "
                    f"a candidate no larger")
        self.keep(self.record())
        if self.reason is not None:
            raise optuna.TrialPruned(self.reason)

    def record(self) -> dict[str, object]:
        """What a trial keeps: its score at each rung, the seconds scoring took, why it stopped."""
        return {"scores": {str(step): score for step, score in sorted(self.scores.items())},
                "seconds": round(self.seconds, 2), "reason": self.reason}
