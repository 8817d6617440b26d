"""Creating or resuming the Optuna study a config describes, on any Optuna storage URL.

One edgetune study is one Optuna study, named by the config's ``study`` and stored at an Optuna
storage URL (default ``sqlite:///<run-dir>/study.db``), so ``optuna-dashboard <url>`` opens it and
several ``edgetune run`` processes on several machines can share it.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial
from sqlalchemy.engine import make_url

from edgetune.errors import InputError
from edgetune.search import baselines
from edgetune.search.record import BASELINE, REFERENCE, ROLE
from edgetune.search.samplers import sampler

# The config imports the training stack (and, by its confirm section, this module's names);
# reading a study needs none of it.
if TYPE_CHECKING:
    from edgetune.search.config import StudyConfig

# ``accuracy`` stands for the task metric (``task.metric``), which Optuna names after the metric
# (``StudyConfig.objective_names``); every metric is maximized.
OBJECTIVE_DIRECTIONS = {"accuracy": "maximize", "latency_ms": "minimize", "size_mb": "minimize"}
OBJECTIVES = ("accuracy", "latency_ms")  # every study's first two; size_mb may follow
DIRECTIONS = tuple(OBJECTIVE_DIRECTIONS[name] for name in OBJECTIVES)
REFERENCE_LATENCY = "reference_latency_ms"  # study user attr: the reference's latency at start
CONFIG_DIR = "config_dir"  # study user attr: the folder the config's relative paths start from
FINGERPRINT = "config_fingerprint"  # study user attr: StudyConfig.fingerprint()
INHERITED_ATTRS = (ROLE, BASELINE)  # what a retried trial keeps of the attempt it repeats
HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 120
CONNECT_TIMEOUT_SECONDS = 10
SCHEMA_ATTEMPTS = 5

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


def make_storage(url: str, retries: int = 0,
                 kind: type[optuna.storages.RDBStorage] = optuna.storages.RDBStorage,
                 ) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``: the one place a storage URL is opened.

    Database storages (of ``kind``) get heartbeats: a trial whose worker stopped beating for
    ``GRACE_SECONDS`` (killed, crashed, its machine lost) is failed by the next worker that starts
    a trial, and tried again up to ``retries`` times. A database server that does not answer fails
    within ``CONNECT_TIMEOUT_SECONDS`` instead of hanging.
    """
    try:
        if url.startswith(("sqlite:", "postgresql", "mysql", "oracle", "mssql")):
            if not url.startswith("sqlite:"):
                with engine(url).connect():  # an unreachable server fails here, at once
                    pass
            return _with_schema(lambda: kind(
                engine_url(url),
                engine_kwargs=_engine_kwargs(url),
                heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=GRACE_SECONDS,
                heartbeat_stale_trial_callback=Retry(max_retry=retries) if retries else None,
            ))
        return optuna.storages.get_storage(url)
    except Exception as error:  # sqlalchemy and drivers raise many types for a bad URL
        raise InputError("--storage", f"cannot open {url}: {_first_line(error)}") from error


def _with_schema(create: Callable[[], optuna.storages.RDBStorage]) -> optuna.storages.RDBStorage:
    """``create()`` again while another worker is creating the tables of a new database.

    Optuna creates its tables, then stamps their schema version, when a storage first opens a
    database; workers starting together on an empty one collide (a duplicate key in PostgreSQL's
    catalog, an existing table in SQLite, or a schema not stamped yet, which Optuna reports as
    incompatible). The one that lost finds the tables ready a moment later.
    """
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            return create()
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError,
                RuntimeError, AssertionError):
            if attempt == SCHEMA_ATTEMPTS - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def engine(url: str) -> sqlalchemy.Engine:
    """A SQLAlchemy engine of its own for a database URL (the study lock's connection), with the
    storage's driver and connect timeout, and no pool: a connection closes when it is done."""
    return sqlalchemy.create_engine(engine_url(url), poolclass=sqlalchemy.NullPool,
                                    **_engine_kwargs(url))


def engine_url(url: str) -> str:
    """``url`` with its database driver made explicit where SQLAlchemy versions differ.

    A bare ``postgresql://`` means psycopg2 to SQLAlchemy 2.0 and psycopg (3) to 2.1; edgetune
    ships psycopg, so it names it.
    """
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def sqlite_file(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL (None for other storages and in-memory ones)."""
    if not url.startswith("sqlite:"):
        return None
    database = make_url(url).database
    return Path(database) if database and database != ":memory:" else None


def _engine_kwargs(url: str) -> dict[str, object]:
    if url.startswith(("postgresql", "postgres", "mysql")):
        return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_SECONDS}}
    return {}


class Retry(optuna.storages.RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a lost trial (same parameters, ``retry_history`` kept), without carrying
    the lost attempt's records over.

    Optuna copies every user attr to the new attempt; the lost attempt's ``failure``, ``stage``
    and ``worker`` would then describe the new one. Only the trial's role carries over (so a
    retried trial 0 is the FP32 reference again).
    """

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        trial = copy.copy(trial)
        trial.user_attrs = {key: value for key, value in trial.user_attrs.items()
                            if key in INHERITED_ATTRS}
        super().__call__(study, trial)


def open_study(config: StudyConfig, name: str, storage: optuna.storages.BaseStorage,
               setup_lock: AbstractContextManager[object] | None = None,
               budget: int | None = None, layers: int | None = None) -> optuna.Study:
    """Resume the study if it exists with the same config, or create and set it up.

    A new study enqueues the FP32 reference as trial 0, so every front is compared with it, then
    the baselines (those that prune need the model's number of encoder ``layers``) and the user's
    own recipes (``edgetune.search.baselines``). Setting up happens
    under ``setup_lock`` (the study lock, ``edgetune.search.lock``), so that of several workers
    starting together only the first one sets the study up.

    Raises:
        InputError: the study exists with a different config (a study's config is fixed).
    """
    stored = _stored_fingerprint(name, storage)
    if stored is None:
        with setup_lock or contextlib.nullcontext():
            study = optuna.create_study(
                storage=storage, study_name=name,
                directions=[OBJECTIVE_DIRECTIONS[n] for n in config.search.objectives],
                sampler=sampler(config, budget), load_if_exists=True)
            stored = study.user_attrs.get(FINGERPRINT)
            if stored is None:
                _set_up(study, config, layers)
                return study
    _refuse_another_config(config, name, stored)
    return optuna.load_study(study_name=name, storage=storage, sampler=sampler(config, budget))


def check_same_config(config: StudyConfig, location: Location) -> None:
    """Refuse, before anything is written, to resume a study that has another config.

    A SQLite file that does not exist yet holds no study: it is not created here.

    Raises:
        InputError: the study exists with a different config.
    """
    file = sqlite_file(location.storage)
    if file is not None and not file.exists():
        return
    stored = _stored_fingerprint(location.study, make_storage(location.storage))
    if stored is not None:
        _refuse_another_config(config, location.study, stored)


def _refuse_another_config(config: StudyConfig, name: str, stored: str) -> None:
    if stored != config.fingerprint():
        raise InputError(
            "study",
            f"a study named {name!r} already exists in this storage with a different config; "
            "a study's config is fixed: give this one a new study name",
        )


def _stored_fingerprint(name: str, storage: optuna.storages.BaseStorage) -> str | None:
    """The config fingerprint of study ``name`` (None while it does not exist or is not set up)."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return None
    return storage.get_study_user_attrs(study_id).get(FINGERPRINT)


def _set_up(study: optuna.Study, config: StudyConfig, layers: int | None) -> None:
    study.set_metric_names(config.objective_names)
    if not study.get_trials(deepcopy=False):  # a set-up killed half-way never enqueues twice
        runtime = config.target.runtime
        study.enqueue_trial(baselines.reference_params(config.space, runtime),
                            user_attrs={ROLE: REFERENCE})
        baselines.enqueue(study, config.space, config.search.enqueue, layers, runtime)
    study.set_user_attr("config", json.loads(config.model_dump_json()))
    study.set_user_attr(FINGERPRINT, config.fingerprint())  # last: the set-up is complete


def metric_name(study: optuna.Study) -> str:
    """The name of the study's task metric, its first objective (``accuracy`` in studies that
    named no objectives)."""
    return (study.metric_names or OBJECTIVES)[0]


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
