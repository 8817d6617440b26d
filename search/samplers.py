"""The samplers a config can choose (``search.sampler``), with settings for studies of a few dozen
trials, each worth a minute of CPU or more (the default task's study is 40 trials).

The FP32 reference and the baselines are enqueued, complete trials that count as start-up points
too.

- TPE and GP: a quarter of the budget as random start-up trials, 5 to 10 (Optuna's default): at
  40 trials the reference, 3 baselines and 6 random trials before the model takes over; a
  12-trial study is not left mostly random. TPE is multivariate with grouping, so the conditional
  knobs (recovery only after pruning, ...) are modelled jointly within each group; constant liar
  keeps parallel workers from sampling the same point. Its "good" group is a quarter of the
  trials, not Optuna's tenth: at 20-40 trials a tenth is the 2-4 corners of the front, which TPE
  then proposed again and again (16 repeats in 40 trials, benchmarks/RESULTS.md, search); a
  quarter takes in the points near the front, so it explores the region between them.
- NSGA-II: its default population of 50 would keep a 40-trial study in its random first
  generation; 10 gives 4 generations.
- GP and NSGA-II model only the parameters every complete trial has (the pruning method, the
  quantization scheme, mostly the fusion): the conditional ones are sampled at random. GP also
  moves on after a repeat (``GPSampler``).

Example:
    >>> from edgetune.search.config import StudyConfig
    >>> config = StudyConfig.model_validate({
    ...     "study": "demo", "task": {"model": "model", "data": {"path": "data.csv"}},
    ...     "search": {"sampler": "nsga2", "seed": 1}})
    >>> type(sampler(config)).__name__
    'NSGAIISampler'
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial

from edgetune.search.repeats import repeats_in_a_row

if TYPE_CHECKING:
    from edgetune.search.config import StudyConfig

# TPE's ``gamma`` is deprecated since Optuna 4.9 for removal in 6.0 (pyproject pins <6) with no
# replacement; edgetune sets it on purpose (``tpe_good_trials``), so the warning tells users
# nothing they can act on.
warnings.filterwarnings("ignore", message="`gamma` has been deprecated", category=FutureWarning)

NSGA2_POPULATION = 10


def startup_trials(budget: int) -> int:
    return min(10, max(5, budget // 4))


def tpe_good_trials(finished: int) -> int:
    """How many of ``finished`` trials TPE models as good: a quarter, at most 25 (Optuna's cap
    for one objective)."""
    return min(math.ceil(0.25 * finished), 25)


class GPSampler(optuna.samplers.GPSampler):
    """Optuna's GP sampler, which samples a trial at random when the study's last finished trial
    was a repeat (``edgetune.search.repeats``).

    A repeat is pruned, so it adds nothing to the trials the GP is fitted on, and the GP's best
    proposal stays the point it just proposed: in the default task's 40-candidate study it
    proposed 44 repeats, the last 20 in a row, and the run stopped on ``MAX_REPEATS_IN_A_ROW``
    at 39 candidates (benchmarks/RESULTS.md, search). A random trial gives the GP a new point,
    so its next proposal differs. TPE and NSGA-II sample at random themselves, so a repeat is
    followed by another draw.
    """

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        if repeats_in_a_row(study.get_trials(deepcopy=False)):
            return {}  # every parameter then comes from the independent (random) sampler
        return super().infer_relative_search_space(study, trial)


def sampler(config: StudyConfig, budget: int | None = None) -> optuna.samplers.BaseSampler:
    """The configured sampler, seeded, with settings for a study of ``budget`` trials (default:
    ``search.trials``)."""
    seed = config.search.seed
    startup = startup_trials(budget or config.search.trials)
    if config.search.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=NSGA2_POPULATION, seed=seed)
    if config.search.sampler == "gp":
        return GPSampler(seed=seed, n_startup_trials=startup)
    if config.search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                      n_startup_trials=startup, constant_liar=True,
                                      gamma=tpe_good_trials)
