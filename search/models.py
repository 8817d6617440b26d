"""A study's models on this machine: its stored config, its artifact store, and each trial's
model, fetched from the store or rebuilt from its recipe (``export`` and ``confirm`` read them
here).

Building is deterministic from the recipe, the study's config and its seeds, so a model that was
not kept (``artifacts.keep``) is rebuilt identically where the task's model and data are found.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from edgetune.errors import InputError
from edgetune.objectives.build import Candidate, StageError, Workbench
from edgetune.objectives.cache import Cache, default_cache_dir
from edgetune.objectives.candidate import build
from edgetune.objectives.finetune import base_key, fine_tuned_base
from edgetune.objectives.runtimes import RUNTIMES
from edgetune.objectives.task import Task, load_task
from edgetune.objectives.vocabulary import model_task
from edgetune.search.artifacts import describe, fetch, model_artifact, open_store
from edgetune.search.config import StudyConfig
from edgetune.search.record import TrialRecord
from edgetune.search.study import CONFIG_DIR, FINGERPRINT, Location, load_study
from edgetune.spaces.recipe import Recipe
from edgetune.spaces.vocabulary import VocabularyRecipe

if TYPE_CHECKING:
    from optuna.artifacts._protocol import ArtifactStore


@dataclass(frozen=True)
class Source:
    """Where a study's models and task are found on this machine."""

    study: optuna.Study
    config: StudyConfig  # the study's own stored config: what its trials were built from
    store: ArtifactStore
    store_name: str  # for messages
    base: Path  # the folder relative paths in the config are taken from


def open_source(location: Location, config: StudyConfig | None,
                config_file: Path | None) -> Source:
    """The study at ``location``; ``config`` (read from ``config_file``) if the user gave one.

    Models are rebuilt from the config stored in the study; a given config must be the same
    (it may differ in locations, which are per machine, such as the artifact store).
    """
    study = load_study(location)
    stored, base = study_config(study, config, config_file)
    artifacts = (config or stored).artifacts
    return Source(study=study, config=stored,
                  store=open_store(artifacts, location.artifacts, base),
                  store_name=describe(artifacts, location.artifacts), base=base)


def study_config(study: optuna.Study, config: StudyConfig | None,
                 config_file: Path | None) -> tuple[StudyConfig, Path]:
    """The config stored in ``study`` and the folder its relative paths start from.

    ``config``, read from ``config_file``, must be the study's (it may differ in what the
    fingerprint leaves out: locations, budgets, confirmation); its folder is then the base. Else
    the base is the folder the study's run started from, if this machine has it, or the current one.

    Raises:
        InputError: the study stores no config this edgetune reads, or ``config`` is not its own.
    """
    if "config" not in study.user_attrs:
        raise InputError("--study", f"{study.study_name!r} is not an edgetune study (it stores "
                                    "no config)")
    try:
        stored = StudyConfig.model_validate(study.user_attrs["config"])
    except ValueError as error:
        raise InputError("--study", f"the config stored in {study.study_name!r} is not one this "
                                    f"edgetune reads: {str(error).splitlines()[0]}") from error
    if config is not None and config.fingerprint() != study.user_attrs.get(FINGERPRINT):
        raise InputError(str(config_file), f"not the config study {study.study_name!r} was run "
                                           "with: name the study by --study instead")
    if config_file is not None:
        return stored, config_file.parent
    started = Path(study.user_attrs.get(CONFIG_DIR, "."))
    return stored, started if started.is_dir() else Path.cwd()


class Models:
    """Trial models from the artifact store, or rebuilt from their recipes when not kept
    (``export`` and ``confirm`` read them here)."""

    def __init__(self, source: Source, scratch: Path, task: Task | None = None) -> None:
        self.source = source
        self.scratch = scratch
        self.task = task
        self._bench: Workbench | None = None

    def suffix(self, trial: TrialRecord) -> str:
        """The suffix of ``trial``'s model file: its runtime's (``.onnx``, ``.tflite``, ...)."""
        runtime = trial.recipe.get("runtime") or self.source.config.target.runtime
        return RUNTIMES[runtime].suffix

    def model(self, trial: TrialRecord, target: Path) -> Path:
        """``trial``'s model at ``target``: fetched, else rebuilt (the task must be loaded)."""
        if not self.fetch(trial, target):
            self.rebuild(trial, target)
        return target

    def fetch(self, trial: TrialRecord, target: Path) -> bool:
        """Download ``trial``'s model to ``target``; False if the store does not hold it."""
        meta = model_artifact(self.source.study, trial.trial)
        return meta is not None and fetch(self.source.store, meta, target)

    def load_task(self, trial: TrialRecord, fetched: bool) -> Task:
        try:
            self.task = load_task(self.source.config.task, self.source.base,
                                  self.source.config.target.image_size)
        except InputError as error:
            if fetched:
                raise
            raise self._unbuildable(trial, str(error)) from error
        return self.task

    def model_task(self, trial: TrialRecord) -> Task:
        """The task as ``trial``'s model reads its texts: with its trimmed tokenizer, if it
        trims its vocabulary (the task must be loaded)."""
        assert self.task is not None, "load_task comes first"
        vocabulary = VocabularyRecipe.model_validate(trial.recipe.get("vocabulary") or {})
        return model_task(self.task, vocabulary)

    def rebuild(self, trial: TrialRecord, target: Path) -> None:
        """Build ``trial``'s model again from its recipe, as its trial did."""
        assert self.task is not None, "load_task comes first"
        try:
            recipe = Recipe.model_validate(trial.recipe)
        except ValueError as error:
            raise self._unbuildable(trial, f"its recipe is not one this edgetune builds "
                                           f"({str(error).splitlines()[0]})") from error
        if self._bench is None:
            self._bench = workbench(self.source.config, self.task)
        candidate = Candidate(path=self.scratch / f"trial-{trial.number}" / target.name)
        try:
            build(recipe, self._bench, candidate)
        except StageError as error:
            raise self._unbuildable(trial, f"rebuilding it failed in {error}") from error
        shutil.move(candidate.path, target)

    def _unbuildable(self, trial: TrialRecord, why: str) -> InputError:
        return InputError("--trial", f"trial {trial.number}'s model is not in the artifact store "
                                     f"({self.source.store_name}) and cannot be rebuilt here: "
                                     f"{why}")


def study_cache(config: StudyConfig) -> Cache:
    return Cache(Path(config.cache_dir) if config.cache_dir else default_cache_dir())


def base_is_cached(config: StudyConfig, task: Task) -> bool:
    """Whether the study's fine-tuned base is built already (this machine's cache, or a shared
    one): ``workbench`` then reads it instead of fine-tuning."""
    return study_cache(config).path("base", base_key(task, config.finetune)).is_dir()


def workbench(config: StudyConfig, task: Task) -> Workbench:
    """What the study's candidates are built from: the fine-tuned base (cached) and settings."""
    cache = study_cache(config)
    base = fine_tuned_base(task, config.finetune, cache)
    # An image task's size is its processor's unless the target sets one: compilers need it.
    target = config.target.model_copy(update={"image_size": task.image_size})
    return Workbench(task=task, base=base, cache=cache, target=target,
                     measure=config.measure, batch_size=config.finetune.batch_size,
                     seed=config.finetune.seed)
