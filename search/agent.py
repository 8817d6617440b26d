"""``edgetune agent``: time and score a study's candidates on the device they ship to.

A front is true only for the hardware that timed it. The agent runs on the device (a board, a
phone with Python, an industrial PC) with nothing but the runtime, numpy, Optuna and a database
driver: no torch, no tokenizer, no data set. It loops:

1. it reads the study's ``target`` and ``measure`` settings and ``task.metric``, the validation
   inputs the builder published (token ids and labels, ``publish_inputs``), the label names (the
   study's ``data``) and the FP32 reference's model;
2. under the study lock it claims the oldest trial whose model this device has not measured
   (user attr ``claim:<device>``): the claim holds for its ``grace`` (``GRACE_SECONDS``) and the
   agent renews it six times as often while it measures; a claim past its grace is an agent
   killed mid-measurement, and the next agent of the device takes the trial;
3. it fetches the model from the study's artifact store, measures it beside the reference with
   the shared protocol (``objectives.measurement``) and writes ``device:<device>``: the figures
   and its machine record, or the error that kept it from loading the model.

The agent of the study's ``target.device`` drives the search (the builder records its figures as
the trial's values, ``edgetune.search.devices``); agents of other devices record theirs on the
same trials, a front per device. The agent writes only figures, claims and its presence
(study user attr ``agent:<device>``); it runs nothing it fetched except by loading the model into
the runtime. Database passwords come from the environment (``EDGETUNE_STORAGE``, libpq's
``PGPASSWORD`` or ``~/.pgpass``) or a file, never from its command line, which ``ps`` shows.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.artifacts import download_artifact, upload_artifact
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url

from edgetune.errors import InputError
from edgetune.objectives.latency import MeasureConfig
from edgetune.objectives.machine import machine_record
from edgetune.objectives.measurement import measure_arrays
from edgetune.objectives.metrics import ACCURACY
from edgetune.objectives.runtimes import RUNTIMES, check_installed, missing, runtime_of
from edgetune.objectives.target import TargetConfig
from edgetune.search.annotations import annotating_storage
from edgetune.search.artifacts import ArtifactsConfig, fetch, model_artifact, open_store
from edgetune.search.failures import failure_record
from edgetune.search.lock import StudyLock
from edgetune.search.lost_trials import worker_record
from edgetune.search.record import CLAIM_PREFIX, DEVICE_PREFIX, REFERENCE, ROLE, device_figures
from edgetune.search.study import sqlite_file

PRESENCE_PREFIX = "agent:"  # study user attr: the last heartbeat of an agent of that device
DEVICE_INPUTS = "device_inputs"  # study user attr: the artifact id of the published inputs
ARTIFACT_STORE = "artifact_store"  # study user attr: where the builder stores the models
GRACE_SECONDS = 60.0
BEATS_PER_GRACE = 6
POLL_SECONDS = 2.0
STORAGE_VARIABLE = "EDGETUNE_STORAGE"
INPUTS_FILE = "device-inputs.npz"
LABELS = "labels"  # the array of the published inputs that holds the labels


def publish_inputs(study: optuna.Study, store: Any, inputs: dict[str, np.ndarray],
                   labels: np.ndarray, folder: Path) -> None:
    """Store the validation split's token ids and labels for the study's agents, once: the
    device then needs neither the data set nor the tokenizer."""
    if DEVICE_INPUTS in study.user_attrs:
        return
    path = folder / INPUTS_FILE
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **inputs, **{LABELS: labels})
    artifact_id = upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=study)
    study.set_user_attr(DEVICE_INPUTS, artifact_id)
    path.unlink()


def last_seen(study_attrs: dict[str, Any], device: str) -> dict[str, Any] | None:
    """The presence record of the last agent of ``device`` that beat, if any."""
    return study_attrs.get(PRESENCE_PREFIX + device)


def is_alive(beat: dict[str, Any] | None, now: float | None = None) -> bool:
    """Whether a heartbeat (``{"heartbeat": unix time, "grace": seconds, ...}``) still holds.
    Agents on several machines compare their clocks here: keep them in sync (NTP) to well
    within the grace."""
    if not beat or "heartbeat" not in beat:
        return False
    grace = float(beat.get("grace", GRACE_SECONDS))
    return (now if now is not None else time.time()) - float(beat["heartbeat"]) < grace


def storage_url(storage: str | None, storage_file: Path | None) -> str:
    """The storage URL from ``--storage``, ``--storage-file`` or ``EDGETUNE_STORAGE``.

    Raises:
        InputError: none given, or a password on the command line (``ps`` shows it).
    """
    if storage is not None:
        if make_url(storage).password is not None:
            raise InputError("--storage", "a password on the command line is visible to every "
                                          "user through ps: give the URL in "
                                          f"{STORAGE_VARIABLE} or --storage-file, or the "
                                          "password in PGPASSWORD or ~/.pgpass")
        return storage
    if storage_file is not None:
        try:
            return storage_file.read_text().strip()
        except OSError as error:
            raise InputError("--storage-file", f"cannot read it: {error.strerror}") from error
    if os.environ.get(STORAGE_VARIABLE):
        return os.environ[STORAGE_VARIABLE]
    raise InputError("--storage", f"name the study's storage: --storage URL, --storage-file or "
                                  f"{STORAGE_VARIABLE}")


@dataclass
class Agent:
    """One measurement agent: a device name, what it runs, and where the study lives."""

    storage_url: str
    study_name: str
    device: str
    runtimes: list[str]
    threads: int | None = None
    artifacts: str | None = None  # the store as this device mounts it [default: the builder's]
    grace: float = GRACE_SECONDS
    log: Callable[[str], None] = print

    def __post_init__(self) -> None:
        self._storage: RDBStorage | None = None
        self._lock: StudyLock | None = None
        self.folder = Path(tempfile.mkdtemp(prefix=f"edgetune-agent-{self.device}-"))
        self.identity = {**worker_record(), "device": self.device, "runtimes": self.runtimes}
        self._inputs: dict[str, np.ndarray] | None = None
        self._label_names: list[str] = []
        self._reference: Path | None = None
        self._last_presence = 0.0

    def _open(self, idle_exit: float | None) -> bool:
        """Wait for the study (an agent may start before its builder), then read its settings;
        False if ``idle_exit`` passed first.

        Raises:
            InputError: the study times its reference in a runtime this agent does not run.
        """
        said, start = False, time.monotonic()
        while (study_id := self._study_id()) is None:
            if idle_exit is not None and time.monotonic() - start >= idle_exit:
                self.log(f"no study {self.study_name!r} in the storage")
                return False
            if not said:
                self.log(f"no study {self.study_name!r} in the storage yet: waiting for its "
                         "builder (check the name if none is running)")
                said = True
            time.sleep(POLL_SECONDS)
        self.study_id = study_id
        self._lock = StudyLock(self.storage_url, self.study_name)
        config = self.storage.get_study_user_attrs(self.study_id).get("config") or {}
        target = dict(config.get("target") or {})
        if self.threads is not None:
            target["threads"] = self.threads
        self.target = TargetConfig.model_validate(target)
        self.settings = MeasureConfig.model_validate(
            {**(config.get("measure") or {}), "isolate": False, "cores": None})
        self.metric = (config.get("task") or {}).get("metric", ACCURACY)
        if self.target.runtime not in self.runtimes:
            raise InputError("--runtime", f"the study times every candidate beside its FP32 "
                                          f"reference in {RUNTIMES[self.target.runtime].title}: "
                                          "this agent must run it")
        return True

    def _study_id(self) -> int | None:
        """The study's id, or None while it does not exist (nor its SQLite file: the builder
        creates both)."""
        database = sqlite_file(self.storage_url)
        if database is not None and not database.exists():
            return None
        if self._storage is None:
            self._storage = annotating_storage(self.storage_url)
        try:
            return self._storage.get_study_id_from_name(self.study_name)
        except KeyError:
            return None

    @property
    def storage(self) -> RDBStorage:
        assert self._storage is not None, "the study is opened first (serve)"
        return self._storage

    @property
    def lock(self) -> StudyLock:
        assert self._lock is not None, "the study is opened first (serve)"
        return self._lock

    def serve(self, idle_exit: float | None = None) -> int:
        """Measure trials as they come; return how many were measured. Runs until killed, or
        until ``idle_exit`` seconds pass with nothing to measure."""
        if not self._open(idle_exit):
            return 0
        measured, idle_since = 0, time.monotonic()
        self.log(f"agent {self.device!r} on {platform.node()}: waiting for candidates of study "
                 f"{self.study_name!r} ({', '.join(self.runtimes)}, {self.target.threads} "
                 "threads)")
        while idle_exit is None or time.monotonic() - idle_since < idle_exit:
            self._beat_presence()
            trial = self._claim() if self._ready() else None
            if trial is None:
                time.sleep(POLL_SECONDS)
                continue
            self._measure(trial)
            measured += 1
            idle_since = time.monotonic()
        return measured

    def _ready(self) -> bool:
        """Whether the inputs and the reference model are here (fetched once, when published)."""
        attrs = self.storage.get_study_user_attrs(self.study_id)
        if self._inputs is None and DEVICE_INPUTS in attrs:
            path = self.folder / INPUTS_FILE
            download_artifact(artifact_store=self._store(), file_path=str(path),
                              artifact_id=attrs[DEVICE_INPUTS])
            with np.load(path, allow_pickle=False) as stored:
                self._inputs = {name: stored[name] for name in stored.files}
            # The builder records its data before it publishes the inputs.
            self._label_names = list((attrs.get("data") or {}).get("labels") or [])
        if self._reference is None:
            reference = next((t for t in self._trials() if t.user_attrs.get(ROLE) == REFERENCE
                              and model_artifact(self.storage, t) is not None), None)
            if reference is not None:
                self._reference = self._fetch(reference, name="reference")
        return self._inputs is not None and self._reference is not None

    def _store(self) -> Any:
        where = self.artifacts or self.storage.get_study_user_attrs(self.study_id).get(
            ARTIFACT_STORE)
        if where is None:
            raise InputError("--artifacts", "the study names no artifact store yet: give the "
                                            "folder or s3:// URL this device reads it at")
        return open_store(ArtifactsConfig(store=where), Path(where))

    def _trials(self) -> list[FrozenTrial]:
        return self.storage.get_all_trials(self.study_id, deepcopy=False)

    def _claim(self) -> FrozenTrial | None:
        """The oldest trial with a model this device has not measured and no live claim on it,
        claimed under the study lock so that two agents never take one trial."""
        with self.lock:
            now = time.time()
            for trial in self._trials():
                if trial.state not in (TrialState.RUNNING, TrialState.COMPLETE):
                    continue
                if device_figures(trial, self.device) is not None:
                    continue
                if is_alive(trial.user_attrs.get(CLAIM_PREFIX + self.device), now):
                    continue
                meta = model_artifact(self.storage, trial)
                if meta is None or not meta.filename.endswith(self._suffixes()):
                    continue
                self._set(trial, CLAIM_PREFIX + self.device, self._beat())
                return trial
        return None

    def _suffixes(self) -> tuple[str, ...]:
        return tuple(RUNTIMES[name].suffix for name in self.runtimes)

    def _measure(self, trial: FrozenTrial) -> None:
        assert self._inputs is not None and self._reference is not None
        started = time.monotonic()
        self.log(f"trial {trial.number}: measuring")
        with self._claim_kept(trial):
            try:
                model = self._fetch(trial)
                labels = self._inputs[LABELS]
                inputs = {k: v for k, v in self._inputs.items() if k != LABELS}
                measurement = measure_arrays(model, self._reference, inputs, labels, inputs,
                                             self.target, self.settings, self.metric,
                                             self._label_names)
                figures: dict[str, Any] = {
                    "measurement": measurement.as_dict()
                    | {"seconds": round(time.monotonic() - started, 2)},
                    "machine": machine_record(self.target, runtime_of(model).name,
                                              device=self.device)}
                model.unlink(missing_ok=True)
                self.log(f"trial {trial.number}: {self.metric} {measurement.accuracy:.4f}, "
                         f"{measurement.ratio.value:.3f}× the FP32 reference")
            except Exception as error:  # recorded on the trial: the builder fails it with this
                figures = {"error": failure_record("device", error)}
                self.log(f"trial {trial.number}: {type(error).__name__}: {error}")
                self.log(traceback.format_exc(limit=3))
        self._set(trial, DEVICE_PREFIX + self.device, figures | {
            "agent": self.identity, "date": datetime.datetime.now(datetime.UTC).isoformat(
                timespec="seconds")})

    def _fetch(self, trial: FrozenTrial, name: str = "candidate") -> Path:
        meta = model_artifact(self.storage, trial)
        if meta is None:
            raise FileNotFoundError(f"trial {trial.number} has no model")
        path = self.folder / f"{name}{Path(meta.filename).suffix}"
        path.unlink(missing_ok=True)
        if not fetch(self._store(), meta, path):
            raise FileNotFoundError(f"the artifact store no longer holds trial {trial.number}'s "
                                    "model")
        return path

    @contextlib.contextmanager
    def _claim_kept(self, trial: FrozenTrial) -> Iterator[None]:
        """Beat on the claim while the trial is measured, so other agents leave it be."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.grace / BEATS_PER_GRACE):
                self._set(trial, CLAIM_PREFIX + self.device, self._beat())

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def _beat(self) -> dict[str, Any]:
        return {**self.identity, "heartbeat": time.time(), "grace": self.grace}

    def _beat_presence(self) -> None:
        if time.monotonic() - self._last_presence < self.grace / BEATS_PER_GRACE:
            return
        self.storage.set_study_user_attr(self.study_id, PRESENCE_PREFIX + self.device,
                                         self._beat())
        self._last_presence = time.monotonic()

    def _set(self, trial: FrozenTrial, key: str, value: dict[str, Any]) -> None:
        self.storage.set_trial_user_attr(trial._trial_id, key, value)

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()
        if self._storage is not None:
            self._storage.remove_session()


def installed_runtimes(names: list[str] | None) -> list[str]:
    """The runtimes an agent measures in: ``names``, each checked to be installed here, or every
    runtime installed here.

    Raises:
        InputError: an unknown or missing runtime was named.
    """
    if names is None:
        return [name for name in RUNTIMES if missing(name) is None]
    for name in names:
        check_installed(name, "--runtime")
    return names

