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
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import TrialState
from rich.console import Console

from edgetune.objectives.cache import Cache, default_cache_dir
from edgetune.objectives.candidate import Workbench
from edgetune.objectives.finetune import check_finetune, fine_tuned_base
from edgetune.objectives.pruning import check_supported
from edgetune.objectives.task import load_task
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
    check_supported(task.model_path, config.space.pruning)
    check_finetune(task, config.finetune)
    if not location.storage.startswith("sqlite:///"):
        make_storage(location.storage)  # fail on an unreachable database before writing anything
    # Failures are reported by the progress display and stored on the trial: not as tracebacks.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("nncf").setLevel(logging.ERROR)

    study = open_study(config, location, budget)
    study.set_user_attr("data", task.dataset.summary() | {"split_seed": config.task.data.splits.seed})
    cache = Cache(Path(config.cache_dir) if config.cache_dir else default_cache_dir())
    with console.status("fine-tuning the base model (cached after the first time)"):
        base = fine_tuned_base(task, config.finetune, cache)
    bench = Workbench(task=task, base=base, cache=cache, target=config.target,
                      measure=config.measure, batch_size=config.finetune.batch_size,
                      seed=config.finetune.seed)
    objective = Objective(config.space, bench, location.run_dir,
                          FileSystemArtifactStore(str(_mkdir(location.artifacts))), config.search)
    start = time.monotonic()
    with TrialProgress(budget, min(finished_trials(study), budget), console) as progress:
        while finished_trials(study) < budget:
            if timeout is not None and time.monotonic() - start >= timeout:
                break
            study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[progress],
                           gc_after_trial=True)
    return study


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
