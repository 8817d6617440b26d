"""``edgetune run``: validate everything, fine-tune the base once, then run trials to the budget.

Nothing is written before the config, the model folder, the data and the storage URL have been
checked, so bad input costs nothing. Trials run one ``study.optimize(n_trials=1)`` at a time so
the budget is re-read from the storage between trials: several workers on one study stop
together when the study, not each worker, has its trials.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState
from rich.console import Console

from edgetune.objectives.cache import Cache, default_cache_dir
from edgetune.objectives.candidate import Workbench
from edgetune.objectives.finetune import fine_tuned_base
from edgetune.objectives.pruning import check_supported
from edgetune.objectives.task import Task, load_task
from edgetune.search.artifacts import describe, discard_off_front, open_store
from edgetune.search.config import StudyConfig
from edgetune.search.objective import Objective
from edgetune.search.progress import TrialProgress
from edgetune.search.study import Location, make_storage, open_study

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def finished_trials(study: optuna.Study) -> int:
    """Trials that count toward the budget: finished ones, except failures that were retried."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.system_attrs.get("failed_trial") for t in trials} - {None}
    return sum(1 for t in trials if t.state in FINISHED and t.number not in retried)


def run(config: StudyConfig, location: Location, config_dir: Path, console: Console,
        trials: int | None = None, timeout: float | None = None) -> optuna.Study:
    """Run trials until the study holds its budget of finished trials (or ``timeout`` passes).

    Libraries print progress of their own (NNCF's bars, ONNX Runtime's calibrators) on stdout;
    it goes to stderr so that stdout carries only edgetune's result (``--json`` reads it).
    """
    with contextlib.redirect_stdout(sys.stderr):
        return _run(config, location, config_dir, console, trials, timeout)


def _run(config: StudyConfig, location: Location, config_dir: Path, console: Console,
         trials: int | None, timeout: float | None) -> optuna.Study:
    budget = trials or config.search.trials
    timeout = timeout or config.search.timeout
    task = load_task(config.task, config_dir)
    check_supported(_model_type(task.model_path), config.space.pruning.methods)
    if not location.storage.startswith("sqlite:///"):
        make_storage(location.storage)  # fail on an unreachable database before writing anything
    # Failures are reported by the progress display and stored on the trial: not as tracebacks.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("nncf").setLevel(logging.ERROR)

    study = open_study(config, location)
    study.set_user_attr("data", task.dataset.summary() | {"split_seed": config.task.data.splits.seed})
    with console.status("fine-tuning the base model (cached after the first time)"):
        bench = workbench(config, task)
    keep = config.artifacts.keep
    store = None if keep == "none" else open_store(config.artifacts, location.artifacts,
                                                   config_dir, create=True)
    objective = Objective(config.space, bench, location.run_dir, store)
    start = time.monotonic()
    with TrialProgress(budget, min(finished_trials(study), budget), console) as progress:
        while finished_trials(study) < budget:
            if timeout is not None and time.monotonic() - start >= timeout:
                break
            study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[progress],
                           gc_after_trial=True)
    if store is not None and keep == "front":
        removed = discard_off_front(study, store)
        where = describe(config.artifacts, location.artifacts)
        console.print(f"artifacts: kept the front's models in {where}; removed {removed} others")
    return study


def workbench(config: StudyConfig, task: Task) -> Workbench:
    """What the study's candidates are built from: the fine-tuned base (cached) and settings."""
    cache = Cache(Path(config.cache_dir) if config.cache_dir else default_cache_dir())
    base = fine_tuned_base(task, config.finetune, cache)
    return Workbench(task=task, base=base, cache=cache, target=config.target,
                     measure=config.measure, batch_size=config.finetune.batch_size,
                     seed=config.finetune.seed)


def _model_type(folder: Path) -> str:
    import json

    return json.loads((folder / "config.json").read_text())["model_type"]

