"""Trials measured on the device: with ``target.device`` this machine builds, an agent measures.

The study database is the queue, Optuna's ask and tell its two ends: the builder asks for a
trial, builds its candidate, stores it as the trial's artifact and marks it ``awaiting_device``;
the device's agent (``edgetune.search.agent``) claims it, measures it and writes its figures on
the trial; the builder then records them as the trial's own (``Objective.record_device``) and
tells the study. While the device measures candidate k the builder builds k+1: at most ``AHEAD``
built candidates wait for the device. The trials that wait keep beating (Optuna's heartbeats), so
a builder lost elsewhere has them failed like any lost worker's.

With no live agent of the device the builder says so within ``ABSENT_SECONDS`` and waits, until
``--timeout`` if one is given; a trial the device could not load is failed with its error.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console

from edgetune.search import lost_trials
from edgetune.search.agent import is_alive, last_seen
from edgetune.search.failures import lost_record
from edgetune.search.lock import StudyLock
from edgetune.search.objective import Objective
from edgetune.search.progress import TrialProgress
from edgetune.search.record import FAILURE, DeviceFigures, device_figures
from edgetune.search.repeats import CONVERGED, MAX_REPEATS_IN_A_ROW, repeats_in_a_row
from edgetune.search.study import Retry

AHEAD = 2  # built candidates waiting for the device: the one it measures and the next
POLL_SECONDS = 1.0
# The builder asks for trials instead of running ``optimize``, and beats for them itself.
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with "
                                          "Study.optimize")
ABSENT_SECONDS = 30.0  # how long without a live agent before the builder says so
HEARTBEAT_SECONDS = 10.0  # Optuna's heartbeat of the waiting trials (its grace: study.py's)


class DeviceTrials:
    """The builder's loop of a device study; ``run`` returns when the budget is measured."""

    def __init__(self, study: optuna.Study, storage: optuna.storages.BaseStorage,
                 objective: Objective, lock: StudyLock, retry: Retry | None, device: str,
                 console: Console) -> None:
        self.study = study
        self.storage = storage
        self.objective = objective
        self.lock = lock
        self.retry = retry
        self.device = device
        self.console = console
        self.waiting: dict[int, optuna.Trial] = {}
        self._last_beat = 0.0
        self._absent_since: float | None = None
        self._said_absent = False
        self._said_converged = False

    def run(self, budget: int, timeout: float | None, progress: TrialProgress,
            taken: Callable[[optuna.Study], int]) -> None:
        start = time.monotonic()
        while timeout is None or time.monotonic() - start < timeout:
            self._record_measured(progress)
            self._beat()
            with self.lock:
                lost_trials.announce_lost_trials(self.study, self.storage, self.retry,
                                                 self.console)
                has_room = (taken(self.study) < budget and len(self.waiting) < AHEAD
                            and not self._converged())
                if not has_room and not self.waiting:
                    return
                trial = self.study.ask() if has_room else None
            if trial is not None:
                self._build(trial, progress)
            else:
                self._wait_for_the_device()
        self._give_up_waiting()

    def _converged(self) -> bool:
        """As ``run._trials``: the last trials all repeated measured recipes; say so once."""
        if repeats_in_a_row(self.study.get_trials(deepcopy=False)) < MAX_REPEATS_IN_A_ROW:
            return False
        if not self._said_converged:
            self.console.print(CONVERGED)
            self._said_converged = True
        return True

    def _build(self, trial: optuna.Trial, progress: TrialProgress) -> None:
        try:
            self.objective.build_for_device(trial, self.device)
        except optuna.TrialPruned:
            self._tell(trial, progress, state=TrialState.PRUNED)
        except Exception:  # recorded on the trial by the objective; the study goes on
            self._tell(trial, progress, state=TrialState.FAIL)
        else:
            self.waiting[trial.number] = trial

    def _record_measured(self, progress: TrialProgress) -> None:
        if not self.waiting:
            return
        stored = {t.number: t for t in self.storage.get_all_trials(self.study._study_id,
                                                                   deepcopy=False)}
        for number, trial in list(self.waiting.items()):
            figures = device_figures(stored[number], self.device)
            if stored[number].state != TrialState.RUNNING:  # failed as lost meanwhile
                del self.waiting[number]
            elif figures is not None:
                del self.waiting[number]
                self._record(trial, figures, progress)

    def _record(self, trial: optuna.Trial, figures: DeviceFigures,
                progress: TrialProgress) -> None:
        if figures.error is not None:
            trial.set_user_attr(FAILURE, figures.error)
            self._tell(trial, progress, state=TrialState.FAIL)
            return
        try:
            values = self.objective.record_device(trial, figures)
        except Exception:
            self._tell(trial, progress, state=TrialState.FAIL)
        else:
            self._tell(trial, progress, values=values)

    def _tell(self, trial: optuna.Trial, progress: TrialProgress,
              state: TrialState | None = None, values: tuple[float, ...] | None = None) -> None:
        frozen: FrozenTrial = self.study.tell(trial, values, state=state)
        progress(self.study, frozen)

    def _beat(self) -> None:
        """Optuna's heartbeat for each waiting trial, as ``optimize`` gives a running one."""
        if time.monotonic() - self._last_beat < HEARTBEAT_SECONDS or not isinstance(
                self.storage, optuna.storages.RDBStorage):
            return
        for trial in self.waiting.values():
            self.storage.record_heartbeat(trial._trial_id)
        self._last_beat = time.monotonic()

    def _wait_for_the_device(self) -> None:
        if is_alive(last_seen(self.study.user_attrs, self.device)):
            self._absent_since, self._said_absent = None, False
        elif self._absent_since is None:
            self._absent_since = time.monotonic()
        elif not self._said_absent and time.monotonic() - self._absent_since >= ABSENT_SECONDS:
            self.console.print(
                f"[yellow]no agent of device {self.device!r} is running[/yellow]: "
                f"{len(self.waiting)} candidate(s) wait for it. Start one on the device: "
                f"edgetune agent --study {self.study.study_name} --device {self.device} "
                "(storage from EDGETUNE_STORAGE)", soft_wrap=True)
            self._said_absent = True
        time.sleep(POLL_SECONDS)

    def _give_up_waiting(self) -> None:
        """At the timeout: the trials still waiting are failed, saying why (retried by a later
        run when ``search.retries`` allows)."""
        for number, trial in self.waiting.items():
            record = lost_record("awaiting device", f"the run's timeout passed while trial "
                                                    f"{number} waited for device "
                                                    f"{self.device!r}")
            trial.set_user_attr(FAILURE, record)
            self.study.tell(trial, state=TrialState.FAIL)
        self.waiting.clear()
