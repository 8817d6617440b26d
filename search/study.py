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

OBJECTIVES = ("accuracy", "latency_ms")
DIRECTIONS = ("maximize", "minimize")
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


def sampler(config: StudyConfig) -> optuna.samplers.BaseSampler:
    seed = config.search.seed
    if config.search.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if config.search.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if config.search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                      n_startup_trials=5, constant_liar=True)


def open_study(config: StudyConfig, location: Location) -> optuna.Study:
    """Create the study, or resume it if it exists with the same config.

    A new study enqueues the FP32 reference as trial 0, so every front is compared with it.

    Raises:
        InputError: the study exists with a different config (a study's config is fixed).
    """
    if location.storage.startswith("sqlite:///"):
        location.run_dir.mkdir(parents=True, exist_ok=True)
    storage = make_storage(location.storage)
    study = optuna.create_study(
        storage=storage,
        study_name=location.study,
        directions=list(DIRECTIONS),
        sampler=sampler(config),
        load_if_exists=True,
    )
    stored = study.user_attrs.get("config_fingerprint")
    if stored is None:
        study.set_metric_names(list(OBJECTIVES))
        study.set_user_attr("config", json.loads(config.model_dump_json()))
        study.set_user_attr("config_fingerprint", config.fingerprint())
        study.enqueue_trial({}, user_attrs={ROLE: REFERENCE})
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
