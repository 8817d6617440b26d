"""Stopping a trial, while it trains, once it is forecast to miss the accuracy floor
(``search.early_stopping``, off by default).

Recovery after pruning and QAT are a trial's expensive stages. A heavily pruned model that is
still far below the floor (``search.constraints.max_accuracy_drop``) halfway through its recovery
would only be measured and found infeasible: stopping it early spends that time on other trials.

The rule is meant never to stop a trial that could still make it:

- At a quarter, half and three quarters of each training phase (recovery, then QAT), the torch
  model's accuracy is measured on the validation split, the data the objective itself scores.
- The forecast is optimistic on purpose: it starts from the best accuracy seen in this phase and
  adds, for every training step still to come (the rest of this phase and all later phases), the
  fastest gain per step seen between two checks of this phase. Training curves flatten, and the
  learning rate decays linearly to zero here, so a past rate bounds the later ones; quantization,
  which only costs accuracy, is not counted either.
- A trial stops only when even that forecast, plus the noise of a validation accuracy at the floor
  (one binomial standard error of the validation split's size, ``noise_margin``), is below the
  floor. Without that margin the rule stopped recoveries that would have made it: two
  checks a quarter of a phase apart differ by a few texts, and the last quarter, at the lowest
  learning rates, gains more than the middle ones (benchmarks/RESULTS.md, early stopping).
  The first check of a phase never stops a trial (there is no rate yet), nor does anything when
  the study has no accuracy floor.
- A forecast is never below the best accuracy the phase has checked, so once a check is within
  the margin of the floor no later check of that phase can stop the trial: the phase is not
  checked again (the next phase is). Each check scores the whole validation split with the torch
  model, and for QAT from the fine-tuned base, which starts near the reference's accuracy, its
  three checks cost about as much as the training itself (benchmarks/RESULTS.md, search).

What the rule is meant for, it does not do on the default task: built to the end, trials it
stopped met the floor (benchmarks/RESULTS.md, "Early stopping: what the stopped trials would have
reached"). A recovery whose learning rate decays to zero can gain most in its last quarter, so the
gain between two middle checks does not bound it, and no margin that keeps such trials stops
enough hopeless ones to pay for the checks. Hence off by default; a task whose training curves
flatten as the forecast assumes can turn it on, after checking it with
``benchmarks/early_stopping.py``.

Optuna's own pruners do not fit: ``Trial.report`` and ``Trial.should_prune`` refuse
multi-objective studies, and its pruners compare a trial with other trials' curves, not with a
fixed floor. The trial still ends in Optuna's PRUNED state (``optuna.TrialPruned``); the checks
and the reason are kept on the trial (see ``search/objective.py``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from itertools import pairwise

import optuna
import torch
from optuna.trial import FrozenTrial

from edgetune.search.record import EARLY_STOPPING

CHECK_FRACTIONS = (0.25, 0.5, 0.75)
RECORD = EARLY_STOPPING  # trial user attr: ``EarlyStopping.record()`` of a checked trial


@dataclass(frozen=True)
class Check:
    phase: str
    step: int
    accuracy: float
    forecast: float | None  # None at a phase's first check


def stopping_record(trial: FrozenTrial) -> dict:
    """The trial's early-stopping record (``EarlyStopping.record``), empty if it was not checked."""
    return trial.user_attrs.get(RECORD) or {}


def check_steps(steps: int) -> set[int]:
    """The steps of a ``steps``-long phase after which accuracy is checked."""
    return {max(1, round(steps * fraction)) for fraction in CHECK_FRACTIONS} - {steps}


def forecast(checks: list[tuple[int, float]], steps_left: int) -> float | None:
    """The most a phase checked at ``(step, accuracy)`` points can still reach (see the module)."""
    if len(checks) < 2:
        return None
    fastest = max((a2 - a1) / (s2 - s1) for (s1, a1), (s2, a2) in pairwise(checks))
    return max(accuracy for _, accuracy in checks) + max(fastest, 0.0) * steps_left


def noise_margin(floor: float, samples: int) -> float:
    """One standard error of a share (accuracy, a class's recall) of ``floor`` measured on
    ``samples`` texts."""
    return math.sqrt(floor * (1 - floor) / samples)


class EarlyStopping:
    """A training callback, called after every step, that stops a trial below ``floor``.

    ``phases`` lists the training loops the build will run, in order
    (``candidate.training_phases``); a step count that starts again marks the next phase.
    ``margin`` is added to every forecast before it is compared with the floor (``noise_margin``).
    """

    def __init__(self, floor: float, phases: list[tuple[str, int]],
                 evaluate: Callable[[torch.nn.Module], float], margin: float = 0.0) -> None:
        self.floor = floor
        self.margin = margin
        self.phases = phases
        self.evaluate = evaluate
        self.checks: list[Check] = []
        self.seconds = 0.0
        self.reason: str | None = None
        self._phase = -1
        self._last_step = 0
        self._first_check = 0  # index in ``checks`` of the current phase's first check

    def __call__(self, step: int, model: torch.nn.Module) -> None:
        if step <= self._last_step or self._phase < 0:
            self._phase += 1
            self._first_check = len(self.checks)
        self._last_step = step
        if self._phase >= len(self.phases) or self._phase_safe():
            return
        name, steps = self.phases[self._phase]
        if step not in check_steps(steps):
            return
        start = time.perf_counter()
        accuracy = self.evaluate(model)
        self.seconds += time.perf_counter() - start
        steps_left = steps - step + sum(n for _, n in self.phases[self._phase + 1:])
        in_phase = [(c.step, c.accuracy) for c in self.checks[self._first_check:]]
        expected = forecast([*in_phase, (step, accuracy)], steps_left)
        self.checks.append(Check(name, step, accuracy, expected))
        if expected is not None and expected + self.margin < self.floor:
            self.reason = (
                f"{name} step {step}/{steps}: validation accuracy {accuracy:.2%}; even at its "
                f"fastest gain so far for the {steps_left} training steps left it would reach "
                f"{expected:.2%}, more than the validation noise ({self.margin:.2%}) below the "
                f"floor {self.floor:.2%}"
            )
            raise optuna.TrialPruned(self.reason)

    def _phase_safe(self) -> bool:
        """Whether a check of the current phase is within the margin of the floor."""
        return any(check.accuracy + self.margin >= self.floor
                   for check in self.checks[self._first_check:])

    @property
    def best_accuracy(self) -> float:
        return max(check.accuracy for check in self.checks)

    def record(self) -> dict[str, object]:
        """What a trial keeps: the floor, every check, the seconds they cost, why it stopped."""
        return {"floor": self.floor, "margin": self.margin,
                "checks": [asdict(c) for c in self.checks],
                "seconds": round(self.seconds, 2), "reason": self.reason}
