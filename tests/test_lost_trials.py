"""A RUNNING trial whose worker is gone is failed with the reason and retried; a live one is not.

Two checks, both on SQLite as on a database server: the worker's process on this machine no
longer exists, or (for a worker elsewhere) its heartbeats stopped for the grace period.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from edgetune.search.failures import failures
from edgetune.search.lost_trials import WORKER, fail_lost_trials, worker_record
from edgetune.search.study import GRACE_SECONDS, Retry, make_storage

# The tests create RUNNING trials with study.ask(), which Optuna warns is not optimize's way.
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")


@pytest.fixture
def study(tmp_path: Path) -> tuple[optuna.Study, optuna.storages.BaseStorage, str]:
    path = tmp_path / "study.db"
    storage = make_storage(f"sqlite:///{path}", retries=1)
    study = optuna.create_study(storage=storage, study_name="s",
                                directions=["maximize", "minimize"])
    return study, storage, str(path)


def running_trial(study: optuna.Study, worker: dict | None = None,
                  stage: str = "measure") -> optuna.Trial:
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    trial.set_user_attr("role", "baseline")
    trial.set_user_attr("stage", stage)
    if worker is not None:
        trial.set_user_attr(WORKER, worker)
    return trial


def dead_worker() -> dict:
    """The record of a process of this machine that has exited."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    return {**worker_record(), "pid": int(child.stdout)}


def test_a_trial_whose_local_process_is_gone_is_failed_and_retried(study) -> None:  # type: ignore[no-untyped-def]
    study, storage, _ = study
    lost = running_trial(study, dead_worker(), stage="qat")
    alive = running_trial(study, worker_record())
    assert fail_lost_trials(study, storage, Retry(max_retry=1)) == [lost.number]
    trials = study.get_trials()
    assert trials[lost.number].state == TrialState.FAIL
    assert trials[alive.number].state == TrialState.RUNNING
    failure = trials[lost.number].user_attrs["failure"]
    assert failure["type"] == "WorkerLost" and failure["stage"] == "qat"
    retry = trials[-1]
    assert retry.state == TrialState.WAITING and retry.params == trials[lost.number].params
    assert retry.user_attrs == {"role": "baseline"}  # not the lost attempt's failure or worker


def test_a_recycled_pid_is_not_mistaken_for_the_worker(study) -> None:  # type: ignore[no-untyped-def]
    study, storage, _ = study
    recycled = {**worker_record(), "started": worker_record()["started"] - 3600}
    running_trial(study, recycled)
    assert fail_lost_trials(study, storage, None) != []


def test_another_machines_worker_is_left_to_its_heartbeats(study) -> None:  # type: ignore[no-untyped-def]
    study, storage, _ = study
    running_trial(study, {**dead_worker(), "machine": "elsewhere/boot/pid:[1]"})
    assert fail_lost_trials(study, storage, None) == []


def test_heartbeats_fail_a_silent_trial_on_sqlite_after_the_grace_period(study) -> None:  # type: ignore[no-untyped-def]
    study, storage, path = study
    beating = running_trial(study, {**dead_worker(), "machine": "elsewhere"})
    silent = running_trial(study, {**dead_worker(), "machine": "elsewhere"}, stage="export")
    for trial in (beating, silent):
        storage.record_heartbeat(trial._trial_id)  # noqa: SLF001 - what Optuna's thread does
    with sqlite3.connect(path) as database:  # the silent one last beat before the grace period
        database.execute("UPDATE trial_heartbeats SET heartbeat = datetime('now', ?) "
                         "WHERE trial_id = ?", (f"-{GRACE_SECONDS + 5} seconds", silent._trial_id))
    fail_lost_trials(study, storage, None)
    states = {t.number: t.state for t in study.get_trials()}
    assert states[beating.number] == TrialState.RUNNING
    assert states[silent.number] == TrialState.FAIL
    assert states[max(states)] == TrialState.WAITING  # Optuna's heartbeat retry, ours
    [row] = failures(study)
    assert (row.trial, row.stage, row.type) == (silent.number, "export", "WorkerLost")
    assert "heartbeats" in row.error and row.retried_as == max(states)
