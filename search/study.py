"""Creating or resuming the Optuna study a config describes, on any Optuna storage URL.

One edgetune study is one Optuna study, named by the config's ``study`` and stored at an Optuna
storage URL (default ``sqlite:///<run-dir>/study.db``), so ``optuna-dashboard <url>`` opens it and
several ``edgetune run`` processes on several machines can share it.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from edgetune.errors import InputError
from edgetune.search import baselines

if TYPE_CHECKING:  # the config imports the training stack; reading a study needs none of it
    from edgetune.search.config import StudyConfig

OBJECTIVE_DIRECTIONS = {"accuracy": "maximize", "latency_ms": "minimize", "size_mb": "minimize"}
OBJECTIVES = ("accuracy", "latency_ms")  # every study's first two; size_mb may follow
DIRECTIONS = tuple(OBJECTIVE_DIRECTIONS[name] for name in OBJECTIVES)
ROLE = "role"  # trial user attr: "reference" for the FP32 yardstick
REFERENCE = "reference"

# Metric names and grouped TPE are stable in practice; their "experimental" labels are noise here.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


@dataclass(frozen=True)
class Location:
    """Where a study lives: its storage URL, its name and the run folder for its files."""

    storage: str
    study: str
    run_dir: Path

    @staticmethod
    def resolve(study: str, run_dir: str | Path | None = None,
                storage: str | None = None) -> Location:
        folder = Path(run_dir) if run_dir else Path("runs") / study
        return Location(storage or f"sqlite:///{folder / 'study.db'}", study, folder)

    @property
    def artifacts(self) -> Path:
        return self.run_dir / "artifacts"


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``; database storages get heartbeats so killed trials fail."""
    try:
        if url.startswith(("sqlite:", "postgresql", "mysql", "oracle", "mssql")):
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=30,
                grace_period=120,
                failed_trial_callback=optuna.storages.RetryFailedTrialCallback(max_retry=1),
            )
        return optuna.storages.get_storage(url)
    except Exception as error:  # sqlalchemy and drivers raise many types for a bad URL
        raise InputError("--storage", f"cannot open {url}: {_first_line(error)}") from error


# Sampler settings for budgets of a few dozen trials, each worth a minute of CPU or more (the
# default task's study is 40 trials). The FP32 reference and the baselines are enqueued, complete
# trials that count as start-up points too.
# - TPE and GP: a quarter of the budget as random start-up trials, 5 to 10 (Optuna's default):
#   at 40 trials the reference, 2 baselines and 7 random trials before the model takes over; a
#   12-trial study is not left mostly random. TPE is multivariate with grouping, so the
#   conditional knobs (recovery only after pruning, ...) are modelled jointly within each group;
#   constant liar keeps parallel workers from sampling the same point.
# - NSGA-II: its default population of 50 would keep a 40-trial study in its random first
#   generation; 10 gives 4 generations.
# - GP and NSGA-II model only the parameters every complete trial has (the pruning method, the
#   quantization scheme, mostly the fusion): the conditional ones are sampled at random.
NSGA2_POPULATION = 10


def startup_trials(budget: int) -> int:
    return min(10, max(5, budget // 4))


def sampler(config: StudyConfig, budget: int | None = None) -> optuna.samplers.BaseSampler:
    """The configured sampler, seeded, with settings for a study of ``budget`` trials (default:
    ``search.trials``)."""
    seed = config.search.seed
    startup = startup_trials(budget or config.search.trials)
    if config.search.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=NSGA2_POPULATION, seed=seed)
    if config.search.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    if config.search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                      n_startup_trials=startup, constant_liar=True)


def open_study(config: StudyConfig, location: Location, budget: int | None = None
               ) -> optuna.Study:
    """Create the study, or resume it if it exists with the same config.

    A new study enqueues the FP32 reference as trial 0, so every front is compared with it, then
    the baselines and the user's own recipes (``edgetune.search.baselines``).

    Raises:
        InputError: the study exists with a different config (a study's config is fixed).
    """
    if location.storage.startswith("sqlite:///"):
        location.run_dir.mkdir(parents=True, exist_ok=True)
    storage = make_storage(location.storage)
    study = optuna.create_study(
        storage=storage,
        study_name=location.study,
        directions=[OBJECTIVE_DIRECTIONS[name] for name in config.search.objectives],
        sampler=sampler(config, budget),
        load_if_exists=True,
    )
    stored = study.user_attrs.get("config_fingerprint")
    if stored is None:
        study.set_metric_names(list(config.search.objectives))
        study.set_user_attr("config", json.loads(config.model_dump_json()))
        study.set_user_attr("config_fingerprint", config.fingerprint())
        study.enqueue_trial(baselines.reference_params(config.space), user_attrs={ROLE: REFERENCE})
        baselines.enqueue(study, config.space, config.search.enqueue)
    elif stored != config.fingerprint():
        raise InputError(
            "study",
            f"a study named {location.study!r} already exists in {location.storage} with a "
            "different config; a study's config is fixed: give this one a new study name",
        )
    return study


def load_study(location: Location) -> optuna.Study:
    """Open an existing study for reading (status, report, export)."""
    storage = make_storage(location.storage)
    try:
        return optuna.load_study(study_name=location.study, storage=storage)
    except KeyError as error:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        known = f" (studies there: {', '.join(names)})" if names else " (it holds no studies)"
        raise InputError("--study", f"no study {location.study!r} in {location.storage}{known}") \
            from error


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
