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
  generation; 10 gives 4 generations. Its children inherit the conditional knobs too
  (``NSGAIISampler``).
- GP models only the parameters every complete trial has (the pruning method, the quantization
  scheme, mostly the fusion): the conditional ones are sampled at random. It moves on after a
  repeat (``GPSampler``).

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

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

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
    proposed repeats until the run stopped on ``MAX_REPEATS_IN_A_ROW`` short of its budget
    (benchmarks/RESULTS.md, search). A random trial gives the GP a new point,
    so its next proposal differs. TPE and NSGA-II sample at random themselves, so a repeat is
    followed by another draw.
    """

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        if repeats_in_a_row(study.get_trials(deepcopy=False)):
            return {}  # every parameter then comes from the independent (random) sampler
        return super().infer_relative_search_space(study, trial)


class NSGAIISampler(optuna.samplers.NSGAIISampler):
    """Optuna's NSGA-II, whose children inherit every parameter their parents have, not only the
    ones all complete trials share.

    Optuna's NSGA-II crosses over the intersection search space and samples every other parameter
    at random. In edgetune's space most knobs are conditional (layers dropped only when the recipe
    prunes, per-channel only for dynamic INT8, ...) and the FP32 reference has none of them, so
    stock NSGA-II evolves the pruning method and the quantization scheme and draws how much to
    prune, how to recover and how to quantize at random, like a random search.

    Here the search space is the union of the parameters of the complete trials
    (``union_search_space``), and ``UnionCrossover`` makes the children: a uniform crossover that
    takes a parameter from the other parent when the chosen one lacks it. Parent selection
    (constrained domination, crowding distance) and the generations stay Optuna's, but the
    enqueued trials join them: Optuna numbers a trial's generation when it first samples a
    parameter, which a trial whose every parameter was enqueued never does, so the FP32 reference
    and the baselines (the layer-halving one often the best point of a study) would never be
    parents.
    """

    def __init__(self, *, population_size: int, seed: int | None = None) -> None:
        super().__init__(population_size=population_size, seed=seed,
                         child_generation_strategy=UnionCrossover(seed))

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.get_trial_generation(study, trial)
        super().before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return union_search_space(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def union_search_space(trials: list[FrozenTrial]) -> dict[str, BaseDistribution]:
    """Every parameter of ``trials`` that can take more than one value, with its distribution;
    a parameter whose distribution differs between trials (a space changed by hand) is left out,
    so it is sampled at random."""
    space: dict[str, BaseDistribution] = {}
    changed: set[str] = set()
    for trial in trials:
        for name, distribution in trial.distributions.items():
            if space.setdefault(name, distribution) != distribution:
                changed.add(name)
    return {name: distribution for name, distribution in space.items()
            if name not in changed and not distribution.single()}


class UnionCrossover:
    """NSGA-II's children over a conditional search space (``NSGAIISampler``).

    Two parents are chosen by binary tournaments under constrained domination (feasible before
    infeasible, then Pareto dominance; Optuna's rule), and the child takes each parameter from one
    of them at random, or from the other when that one lacks it. A parameter neither parent has,
    or one that mutates, is left out of the child and sampled at random if its recipe needs it.
    Each parameter mutates with probability 1 / parameters (Optuna's default), plus 1 / parameters
    for each repeat the study has just proposed in a row: children of a converged population are
    copies of measured recipes, pruned unbuilt (``edgetune.search.repeats``), and without more
    mutation a run would stop on them before its budget. Every child is a crossover: Optuna
    copies a parent one time in ten, which here would be a repeat.

    Example:
        >>> import optuna
        >>> from optuna.distributions import IntDistribution as Int
        >>> parents = [optuna.trial.create_trial(params=params, values=[0.9, 1.0],
        ...     distributions={name: Int(0, 4) for name in params})
        ...     for params in ({"layers_dropped": 3}, {"layers_dropped": 3, "scope": 1})]
        >>> study = optuna.create_study(directions=["maximize", "minimize"])
        >>> child = UnionCrossover(seed=0)(study, {"layers_dropped": Int(0, 4),
        ...                                         "scope": Int(0, 4)}, parents)
        >>> child["layers_dropped"]
        3
    """

    def __init__(self, seed: int | None = None, swapping_prob: float = 0.5) -> None:
        self._rng = np.random.RandomState(seed)
        self._swapping_prob = swapping_prob

    def __call__(self, study: optuna.Study, search_space: dict[str, BaseDistribution],
                 population: list[FrozenTrial]) -> dict[str, object]:
        first = self._tournament(study, population)
        second = self._tournament(study, [t for t in population if t is not first] or population)
        repeats = repeats_in_a_row(study.get_trials(deepcopy=False))
        mutation_prob = min(1.0, (1 + repeats) / max(1, len(search_space)))
        child: dict[str, object] = {}
        for name in search_space:
            order = (first, second) if self._rng.rand() >= self._swapping_prob else (second, first)
            donor = next((parent for parent in order if name in parent.params), None)
            if donor is not None and self._rng.rand() >= mutation_prob:
                child[name] = donor.params[name]
        return child

    def _tournament(self, study: optuna.Study, population: list[FrozenTrial]) -> FrozenTrial:
        one, other = (population[self._rng.choice(len(population))] for _ in range(2))
        return one if constrained_dominates(one, other, study.directions) else other


def constrained_dominates(one: FrozenTrial, other: FrozenTrial,
                          directions: list[StudyDirection]) -> bool:
    """Whether ``one`` beats ``other``: feasible over infeasible, the smaller total violation
    among infeasible trials, Pareto dominance among feasible ones (as Optuna's NSGA-II ranks)."""
    violations = [sum(v for v in t.constraints.values() if v > 0) for t in (one, other)]
    if violations[0] > 0 or violations[1] > 0:
        return violations[0] < violations[1]
    signs = [1 if d == StudyDirection.MINIMIZE else -1 for d in directions]
    mine = [s * v for s, v in zip(signs, one.values, strict=True)]
    theirs = [s * v for s, v in zip(signs, other.values, strict=True)]
    return all(a <= b for a, b in zip(mine, theirs)) and mine != theirs


def sampler(config: StudyConfig, budget: int | None = None) -> optuna.samplers.BaseSampler:
    """The configured sampler, seeded, with settings for a study of ``budget`` trials (default:
    ``search.trials``)."""
    seed = config.search.seed
    startup = startup_trials(budget or config.search.trials)
    if config.search.sampler == "nsga2":
        return NSGAIISampler(population_size=NSGA2_POPULATION, seed=seed)
    if config.search.sampler == "gp":
        return GPSampler(seed=seed, n_startup_trials=startup)
    if config.search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                      n_startup_trials=startup, constant_liar=True,
                                      gamma=tpe_good_trials)
