"""``edgetune run``: validate everything, fine-tune the base once, run trials to the budget, then
confirm the front (``confirm.after_run``; skipped when the last confirmation is still current).

Nothing is written before the config, the storage URL, the model folder and the data have been
checked, so bad input costs nothing. Trials run one ``study.optimize(n_trials=1)`` at a time so
the budget is re-read from the storage between trials: several workers on one study stop
together when the study, not each worker, has its trials (exactly: see ``edgetune.search.lock``).
A worker killed mid-trial costs that trial only (``edgetune.search.lost_trials``); Ctrl-C fails
the running trial as interrupted, prints the front and exits with code 130.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.text import Text

from edgetune.objectives.architectures import encoder_layers
from edgetune.objectives.finetune import check_finetune
from edgetune.objectives.isolation import measurement_cores, training_apart
from edgetune.objectives.pruning import check_space
from edgetune.objectives.task import Task, checkpoint_folder, load_task
from edgetune.objectives.vision import check_image_space
from edgetune.objectives.vocabulary import check_vocabulary
from edgetune.search import lost_trials
from edgetune.search.agent import ARTIFACT_STORE, publish_inputs
from edgetune.search.artifacts import S3_SCHEME, describe, discard_off_front, open_store
from edgetune.search.config import StudyConfig
from edgetune.search.confirm import confirm
from edgetune.search.devices import DeviceTrials
from edgetune.search.failures import Interrupted
from edgetune.search.front import is_current, reference
from edgetune.search.library_log import LOG_FILE, library_output_to
from edgetune.search.lock import StudyLock
from edgetune.search.models import base_is_cached, workbench
from edgetune.search.objective import Objective
from edgetune.search.progress import TrialProgress, phase
from edgetune.search.repeats import (
    CONVERGED,
    MAX_REPEATS_IN_A_ROW,
    is_repeat,
    repeats_in_a_row,
)
from edgetune.search.study import (
    CONFIG_DIR,
    Location,
    Retry,
    check_same_config,
    load_study,
    make_storage,
    open_study,
)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class Stopped(Exception):
    """The run was interrupted (Ctrl-C, SIGTERM); its trial is failed and the study is intact."""

    def __init__(self, study: optuna.Study | None, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.study = study
        self.signum = signum


def finished_trials(study: optuna.Study) -> int:
    """Trials that count toward the budget: finished ones, except failures that were retried and
    repeats of a recipe already measured (``edgetune.search.repeats``)."""
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return sum(1 for t in trials
               if t.state in FINISHED and t.number not in retried and not is_repeat(t))


def taken_trials(study: optuna.Study) -> int:
    """Trials finished or running (on any worker): a worker starts one more only below budget."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return finished_trials(study) + len(running)


def run(config: StudyConfig, location: Location, config_dir: Path, console: Console,
        trials: int | None = None, timeout: float | None = None) -> optuna.Study:
    """Run trials until the study holds its budget of finished trials (or ``timeout`` passes).

    stdout carries only edgetune's result (``--json`` reads it): while the study runs, library
    output goes to ``<run-dir>/edgetune.log`` (``edgetune.search.library_log``), and before, while
    the input is checked, to stderr. ``console`` must hold its own stream (``Console(file=...)``),
    since ``sys.stderr`` is the log file meanwhile. With ``measure.isolate`` this process, which
    trains, keeps off the measurement cores.

    Raises:
        InputError: bad input, found before anything is written.
        Stopped: SIGINT or SIGTERM; the running trial is failed as interrupted (and retried by
            the next run when ``search.retries`` allows).
    """
    with contextlib.redirect_stdout(sys.stderr), _interrupts_raised(), _training_apart(config):
        return _run(config, location, config_dir, console, trials, timeout)


def _training_apart(config: StudyConfig) -> contextlib.AbstractContextManager[None]:
    if not config.measure.isolate:
        return contextlib.nullcontext()
    return training_apart(measurement_cores(config.measure.cores, config.target.threads))


def _run(config: StudyConfig, location: Location, config_dir: Path, console: Console,
         trials: int | None, timeout: float | None) -> optuna.Study:
    check_same_config(config, location)  # and fail on an unreachable database, before all else
    model_path = checkpoint_folder(config.task.model, config_dir, config.task.trust_remote_code)
    model_config = json.loads((model_path / "config.json").read_text())
    check_space(model_config, config.space.pruning)  # the space first: it needs no model loaded
    task = load_task(config.task, config_dir, config.target.image_size)
    if task.kind == "image":
        check_image_space(model_config["model_type"], config.target, config.space)
    check_finetune(task, config.finetune)
    check_vocabulary(task, config.space.vocabulary)

    log_file = _mkdir(location.run_dir) / LOG_FILE
    console.print(Text(f"library logs: {log_file}"), soft_wrap=True)
    with library_output_to(log_file):
        return _study(config, location, config_dir, console, task, model_config,
                      trials or config.search.trials, timeout or config.search.timeout)


def _study(config: StudyConfig, location: Location, config_dir: Path, console: Console,
           task: Task, model_config: dict[str, Any], budget: int,
           timeout: float | None) -> optuna.Study:
    """Open the study, fine-tune the base, run the trials, confirm the front."""
    storage = make_storage(location.storage, config.search.retries)
    retry = Retry(max_retry=config.search.retries) if config.search.retries else None
    lock = StudyLock(location.storage, location.study)
    study = None
    try:
        study = open_study(config, location.study, storage, setup_lock=lock, budget=budget,
                           layers=encoder_layers(model_config))
        study.set_user_attr("data", task.dataset.summary()
                            | {"split_seed": config.task.data.splits.seed}
                            | ({"image_size": task.image_size} if task.kind == "image" else {}))
        study.set_user_attr(CONFIG_DIR, str(config_dir.resolve()))  # the config's relative paths
        with phase(console, _base_phase(config, task)):
            bench = workbench(config, task)
        keep = config.artifacts.keep
        store = None if keep == "none" else open_store(config.artifacts, location.artifacts,
                                                       config_dir, create=True)
        objective = Objective(config.space, bench, location.run_dir, store,
                              search=config.search, lock=lock)
        if config.target.device is None:
            _trials(study, storage, objective, lock, retry, budget, timeout, console)
        else:
            assert store is not None  # the config refuses keep: none with a device
            study.set_user_attr(ARTIFACT_STORE, _store_address(config, location, config_dir))
            publish_inputs(study, store, task.encoded("validation"), task.labels("validation"),
                           location.run_dir / "work")
            with TrialProgress(budget, min(finished_trials(study), budget), console) as progress:
                DeviceTrials(study, storage, objective, lock, retry, config.target.device,
                             console).run(budget, timeout, progress, taken_trials)
        # Confirmation reads the models near the front: before ``keep: front`` removes them.
        # A device's figures are confirmed on the device: this machine's would be another front.
        if (config.confirm.after_run and config.target.device is None
                and reference(study) is not None
                and not is_current(study, config.confirm.margin, config.target)):
            with phase(console, "confirming the front: measuring it and the trials within "
                                f"{config.confirm.margin:.0%} of it again, together"):
                confirm(study, location, task, config, config_dir)
            study = load_study(location)  # Optuna caches finished trials: read the confirmation
        if store is not None and keep == "front":
            removed = discard_off_front(study, store)
            where = describe(config.artifacts, location.artifacts)
            console.print(f"artifacts: kept the front's models in {where}; removed {removed} "
                          "others")
    except KeyboardInterrupt as error:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this short
        if study is not None:
            lost_trials.fail_interrupted(study, storage, error, retry)
        raise Stopped(study, getattr(error, "signum", signal.SIGINT)) from error
    finally:
        lock.close()
    return study


def _store_address(config: StudyConfig, location: Location, config_dir: Path) -> str:
    """The artifact store as an absolute folder or an s3:// URL: where the agents read it,
    unless they mount it elsewhere (``edgetune agent --artifacts``)."""
    store = config.artifacts.store
    if store is not None and store.startswith(S3_SCHEME):
        return store
    folder = location.artifacts if store is None else config_dir / store
    return str(folder.resolve())


def _base_phase(config: StudyConfig, task: Task) -> str:
    """What the run does before its first trial: in a new study, its first minutes."""
    if base_is_cached(config, task):
        return "fine-tuned base model found in the cache: not fine-tuned again"
    settings = config.finetune
    if settings.method == "none":
        return "preparing the base model (finetune: none), cached after this first run"
    how = " with LoRA" if settings.method == "lora" else ""
    return f"fine-tuning the base model{how}, {settings.steps} steps (cached after this first run)"


def _trials(study: optuna.Study, storage: optuna.storages.BaseStorage, objective: Objective,
            lock: StudyLock, retry: Retry | None, budget: int, timeout: float | None,
            console: Console) -> None:
    """Take trials one at a time while the study is below its budget.

    Counting the trials and creating the next one happen under the study lock (the objective
    releases it once its trial exists), so workers together run exactly the budget.
    """
    start = time.monotonic()
    with TrialProgress(budget, min(finished_trials(study), budget), console) as progress:
        while timeout is None or time.monotonic() - start < timeout:
            try:
                lock.acquire()
                lost_trials.announce_lost_trials(study, storage, retry, console)
                if taken_trials(study) >= budget:
                    break
                if repeats_in_a_row(study.get_trials(deepcopy=False)) >= MAX_REPEATS_IN_A_ROW:
                    console.print(CONVERGED)
                    break
                study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[progress],
                               gc_after_trial=True)
            finally:
                lock.release()


@contextlib.contextmanager
def _interrupts_raised() -> Iterator[None]:
    """SIGINT and SIGTERM raise ``Interrupted`` (naming the signal) while a study runs."""

    def handler(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread receives signals
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, action in previous.items():
            signal.signal(sig, action)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
