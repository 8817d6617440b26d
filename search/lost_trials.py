"""Trials whose worker stopped: found, failed with the reason stored, and retried when configured.

A trial is RUNNING in the storage while its worker builds and measures it. If the worker stops
without telling the storage (``kill -9``, a crash, the machine lost), the trial must not stay
RUNNING forever: it would count toward the budget and never finish. Two checks find such trials,
both run by a worker before it takes a trial:

- the worker's process on this machine is gone: each trial records its ``worker`` (host, a
  machine id, pid and the process start time), so a restarted ``edgetune run`` fails its killed
  predecessor's trial at once, on SQLite as on a database server;
- a worker elsewhere stopped sending heartbeats: Optuna's heartbeat check on database storages
  (``edgetune.search.study.make_storage``) fails it after the grace period.

A worker that is interrupted (Ctrl-C, SIGTERM) fails its own trial, with that reason, before it
stops. Each failed trial is tried again (same recipe) up to ``search.retries`` times.
"""

from __future__ import annotations

import functools
import os
import platform
from collections.abc import Callable
from pathlib import Path

import optuna
import psutil
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console

from edgetune.search.failures import INTERRUPTED, failure_record, lost_record
from edgetune.search.record import FAILURE, STAGE, WORKER

RetryCallback = Callable[[optuna.Study, FrozenTrial], None]


@functools.cache
def machine_id() -> str:
    """What makes a pid mean the same process: this kernel's boot and this pid namespace.

    The host name alone is not enough: containers on one host may share it, and a pid in
    another pid namespace (or after a reboot) is another process.
    """
    parts = [platform.node()]
    for source in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            parts.append(Path(source).read_text().strip() if "boot" in source
                         else os.readlink(source))
        except OSError:
            parts.append("?")
    return "/".join(parts)


def worker_record() -> dict[str, object]:
    """The ``worker`` user attr of a trial this process runs."""
    return {"host": platform.node(), "machine": machine_id(), "pid": os.getpid(),
            "started": psutil.Process().create_time()}


def _is_gone(worker: dict[str, object]) -> bool:
    """Whether ``worker`` ran on this machine and its process no longer exists."""
    if worker.get("machine") != machine_id():
        return False  # another machine's worker: its heartbeats tell
    try:
        return psutil.Process(int(worker["pid"])).create_time() != worker["started"]  # type: ignore[arg-type]
    except psutil.NoSuchProcess:
        return True


def fail_lost_trials(study: optuna.Study, storage: optuna.storages.BaseStorage,
                     retry: RetryCallback | None) -> list[int]:
    """Fail the RUNNING trials whose worker is gone, record why, retry them; return their numbers.

    Call it holding the study lock, so two workers never fail (and retry) one trial twice.
    """
    optuna.storages.fail_stale_trials(study)  # heartbeats; Optuna runs the retry callback
    lost = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER)
        if worker and _is_gone(worker):
            message = (f"its worker (pid {worker['pid']} on {worker['host']}) stopped during the "
                       "trial: killed, crashed or its machine restarted")
            if _fail(study, storage, trial, lost_record(trial.user_attrs.get(STAGE, "start"),
                                                        message), retry):
                lost.append(trial.number)
    return lost


def announce_lost_trials(study: optuna.Study, storage: optuna.storages.BaseStorage,
                         retry: RetryCallback | None, console: Console) -> None:
    """``fail_lost_trials``, saying on ``console`` which trials were lost (and queued again)."""
    for number in fail_lost_trials(study, storage, retry):
        console.print(f"[yellow]trial {number} was lost with its worker[/yellow]: failed"
                      + (", and queued again" if retry else ""))


def fail_interrupted(study: optuna.Study, storage: optuna.storages.BaseStorage,
                     error: KeyboardInterrupt, retry: RetryCallback | None) -> list[int]:
    """After an interrupt: fail this process's trials with that reason and retry them.

    The trial the objective was running is failed already (Optuna fails a trial whose objective
    raises; the objective recorded the interrupt first); a trial caught between its creation and
    its objective is failed here.
    """
    me = worker_record()
    interrupted = []
    for trial in study.get_trials(deepcopy=False):
        worker = trial.user_attrs.get(WORKER) or {}
        if any(worker.get(key) != me[key] for key in ("machine", "pid", "started")):
            continue
        if trial.state == TrialState.RUNNING:
            if _fail(study, storage, trial,
                     failure_record(trial.user_attrs.get(STAGE, "start"), error), retry):
                interrupted.append(trial.number)
        elif (trial.state == TrialState.FAIL
              and trial.user_attrs.get(FAILURE, {}).get("type") == INTERRUPTED):
            if retry is not None:
                retry(study, trial)
            interrupted.append(trial.number)
    return interrupted


def _fail(study: optuna.Study, storage: optuna.storages.BaseStorage, trial: FrozenTrial,
          record: dict[str, str], retry: RetryCallback | None) -> bool:
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study.study_name), trial.number)
    try:
        storage.set_trial_user_attr(trial_id, FAILURE, record)
        if not storage.set_trial_state_values(trial_id, TrialState.FAIL):
            return False
    except UpdateFinishedTrialError:  # it finished after all
        return False
    if retry is not None:
        retry(study, storage.get_trial(trial_id))
    return True
