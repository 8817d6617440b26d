"""Why a trial failed: recorded on the trial when it fails, read back by ``status`` and the report.

A failed trial holds the user attr ``failure`` {stage, error, type, traceback}: the stage it was
in (``prune_recover``, ``export``, ``measure``, ...), the error's message and type. Three kinds:

- an exception in a stage (NaN loss, an export error, a model ONNX Runtime cannot load, out of
  memory): the trial fails and the study goes on;
- an interrupt (Ctrl-C, SIGTERM): type ``Interrupted``, recorded before the worker stops;
- a lost worker (``kill -9``, a crash, a machine gone): type ``WorkerLost``, recorded by the
  worker that finds the trial stale (``edgetune.search.lost_trials``). A trial failed by Optuna's
  own heartbeat check carries no record; it is read back as a lost worker too.
"""

from __future__ import annotations

import signal
import traceback
from dataclasses import asdict, dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from edgetune.search.record import FAILURE, STAGE

INTERRUPTED = "Interrupted"
WORKER_LOST = "WorkerLost"


class Interrupted(KeyboardInterrupt):
    """Raised by the signal handlers of ``edgetune run`` for SIGINT and SIGTERM.

    A ``KeyboardInterrupt``, so Optuna fails the running trial and stops ``optimize``.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    def describe(self) -> str:
        name = signal.Signals(self.signum).name
        return f"interrupted by {name}" + (" (Ctrl-C)" if self.signum == signal.SIGINT else "")


def failure_record(stage: str, error: BaseException) -> dict[str, str]:
    """The ``failure`` user attr for ``error`` raised in ``stage``."""
    if isinstance(error, KeyboardInterrupt):
        message = error.describe() if isinstance(error, Interrupted) else "interrupted (Ctrl-C)"
        return {"stage": stage, "error": message, "type": INTERRUPTED, "traceback": ""}
    return {
        "stage": stage,
        "error": str(error) or type(error).__name__,
        "type": type(error).__name__,
        "traceback": "".join(traceback.format_exception(error))[-4000:],
    }


def lost_record(stage: str, message: str) -> dict[str, str]:
    return {"stage": stage, "error": message, "type": WORKER_LOST, "traceback": ""}


@dataclass(frozen=True)
class FailureRow:
    trial: int
    stage: str
    type: str
    error: str  # first line of the message
    retried_as: int | None  # the trial that ran this one's recipe again, if any

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def failures(study: optuna.Study) -> list[FailureRow]:
    """Every failed trial of ``study`` with its stage, error, and the trial that retried it."""
    trials = study.get_trials(deepcopy=False)
    retries = {  # Optuna's retry history ends with the trial that was retried directly
        trial.system_attrs["retry_history"][-1]: trial.number
        for trial in trials if trial.system_attrs.get("retry_history")
    }
    return [_row(trial, retries.get(trial.number))
            for trial in trials if trial.state == TrialState.FAIL]


def _row(trial: FrozenTrial, retried_as: int | None) -> FailureRow:
    record = trial.user_attrs.get(FAILURE) or lost_record(
        trial.user_attrs.get(STAGE, "start"),
        "its worker stopped sending heartbeats (killed, crashed, or its machine was lost)",
    )
    lines = str(record.get("error", "")).strip().splitlines()
    return FailureRow(trial.number, str(record.get("stage", "?")), str(record.get("type", "?")),
                      lines[0] if lines else "", retried_as)
