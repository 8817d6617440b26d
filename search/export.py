"""``edgetune export``: one trial's model as a folder someone deploys (DESIGN §6).

The folder holds ``model.onnx``; ``model.ort`` and ``model.required_operators.config`` (ONNX
Runtime's mobile format and the operator list of a reduced build); the tokenizer's files (cutting
texts at the study's ``max_length``); ``labels.json`` (label names in output order);
``recipe.json``; ``metrics.json`` (the trial's figures and a fresh re-measurement here: validation
and test accuracy, latency interleaved with the FP32 reference); and a README.

The model comes from the artifact store, else it is rebuilt from the trial's recipe: building is
deterministic from the recipe, the study's config and its seeds. Everything is written to a hidden
folder beside the target and renamed into place once complete, so a failure leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from edgetune.errors import InputError
from edgetune.objectives.accuracy import accuracy
from edgetune.objectives.candidate import Candidate, StageError, build, measure_model
from edgetune.objectives.machine import machine_record
from edgetune.objectives.predictor import LABELS_FILE, MODEL_FILE
from edgetune.objectives.runtimes import for_target
from edgetune.objectives.task import Task, load_task
from edgetune.search.artifacts import describe, fetch, model_artifact, open_store
from edgetune.search.config import StudyConfig
from edgetune.search.front import confirmed_figures, reference
from edgetune.search.readme import readme
from edgetune.search.run import workbench
from edgetune.search.study import CONFIG_DIR, FINGERPRINT, Location, load_study
from edgetune.spaces.recipe import Recipe

if TYPE_CHECKING:
    from optuna.artifacts._protocol import ArtifactStore

    from edgetune.objectives.candidate import Workbench

METRICS_FILE = "metrics.json"
RECIPE_FILE = "recipe.json"


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


def export(source: Source, number: int, out: Path, force: bool) -> dict[str, Any]:
    """Write trial ``number``'s folder to ``out``; return its metrics.

    Raises:
        InputError: no such trial; it is not complete; ``out`` exists (without ``force``, or
            it is not an earlier export); the model is gone and cannot be rebuilt here.
    """
    trial = exportable(source.study, number)
    fp32 = reference(source.study)
    if fp32 is None:
        raise InputError("--trial", "the study's FP32 reference trial has not completed: there "
                                    "is nothing to measure the model against")
    _check_target(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        with tempfile.TemporaryDirectory(prefix="edgetune-export-") as scratch:
            metrics = _write_folder(source, trial, fp32, staging, Path(scratch))
        _move_into_place(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return metrics


def _write_folder(source: Source, trial: FrozenTrial, fp32: FrozenTrial, folder: Path,
                  scratch: Path) -> dict[str, Any]:
    models = Models(source, scratch)
    model = folder / MODEL_FILE
    fetched = models.fetch(trial, model)
    task = models.load_task(trial, fetched)
    if not fetched:
        models.rebuild(trial, model)
    reference_model = scratch / "reference.onnx"
    if not models.fetch(fp32, reference_model):
        models.rebuild(fp32, reference_model)
    ort_file, operators = for_target(source.config.target).deploy_files(model)
    task.tokenizer.model_max_length = source.config.task.max_length  # type: ignore[attr-defined]
    task.tokenizer.save_pretrained(folder)  # type: ignore[attr-defined]
    _write_json(folder / LABELS_FILE, task.label_names)
    _write_json(folder / RECIPE_FILE, trial.user_attrs["recipe"])
    metrics = _metrics(source, trial, "artifact" if fetched else "rebuilt", model,
                       reference_model, task, ort_file)
    _write_json(folder / METRICS_FILE, metrics)
    (folder / "README.md").write_text(
        readme(metrics, task.label_names, source.config, operators.name))
    return metrics


def exportable(study: optuna.Study, number: int) -> FrozenTrial:
    """Trial ``number`` if it completed, else say why it has no model to export."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    trial = trials.get(number)
    if trial is None:
        known = f"its trials are 0 to {max(trials)}" if trials else "it has no trials"
        raise InputError("--trial", f"study {study.study_name!r} has no trial {number} ({known})")
    if trial.state == TrialState.COMPLETE:
        return trial
    why = {
        TrialState.FAIL: "failed",
        TrialState.PRUNED: "was pruned",
        TrialState.RUNNING: "is still running",
        TrialState.WAITING: "is waiting to run",
    }[trial.state]
    failure = trial.user_attrs.get("failure")
    if failure:
        why += f" in {failure.get('stage')}: {failure.get('type')}: {failure.get('error')}"[:200]
    pruned = trial.user_attrs.get("pruned")  # early stopping: {stage, reason}
    if pruned:
        why += f" in {pruned.get('stage')}: {pruned.get('reason')}"[:200]
    raise InputError("--trial", f"trial {number} {why}; only a complete trial has a model to "
                                "export (edgetune status lists the front)")


class Models:
    """Trial models from the artifact store, or rebuilt from their recipes when not kept
    (``export`` and ``confirm`` read them here)."""

    def __init__(self, source: Source, scratch: Path, task: Task | None = None) -> None:
        self.source = source
        self.scratch = scratch
        self.task = task
        self._bench: Workbench | None = None

    def model(self, trial: FrozenTrial, target: Path) -> Path:
        """``trial``'s model at ``target``: fetched, else rebuilt (the task must be loaded)."""
        if not self.fetch(trial, target):
            self.rebuild(trial, target)
        return target

    def fetch(self, trial: FrozenTrial, target: Path) -> bool:
        """Download ``trial``'s model to ``target``; False if the store does not hold it."""
        meta = model_artifact(self.source.study, trial)
        return meta is not None and fetch(self.source.store, meta, target)

    def load_task(self, trial: FrozenTrial, fetched: bool) -> Task:
        try:
            self.task = load_task(self.source.config.task, self.source.base)
        except InputError as error:
            if fetched:
                raise
            raise self._unbuildable(trial, str(error)) from error
        return self.task

    def rebuild(self, trial: FrozenTrial, target: Path) -> None:
        """Build ``trial``'s model again from its recipe, as its trial did."""
        assert self.task is not None, "load_task comes first"
        try:
            recipe = Recipe.model_validate(trial.user_attrs.get("recipe"))
        except ValueError as error:
            raise self._unbuildable(trial, f"its recipe is not one this edgetune builds "
                                           f"({str(error).splitlines()[0]})") from error
        if self._bench is None:
            self._bench = workbench(self.source.config, self.task)
        candidate = Candidate(path=self.scratch / f"trial-{trial.number}" / MODEL_FILE)
        try:
            build(recipe, self._bench, candidate)
        except StageError as error:
            raise self._unbuildable(trial, f"rebuilding it failed in {error}") from error
        shutil.move(candidate.path, target)

    def _unbuildable(self, trial: FrozenTrial, why: str) -> InputError:
        return InputError("--trial", f"trial {trial.number}'s model is not in the artifact store "
                                     f"({self.source.store_name}) and cannot be rebuilt here: "
                                     f"{why}")


def _metrics(source: Source, trial: FrozenTrial, origin: str, model: Path, reference_model: Path,
             task: Task, ort_file: Path) -> dict[str, Any]:
    config = source.config
    measured = measure_model(model, reference_model, task, config.target, config.measure)
    test_accuracy = accuracy(model, task.encoded("test"), task.labels("test"), config.target)
    recorded = trial.user_attrs.get("measurement", {})
    confirmed = confirmed_figures(trial)
    ratio_range = _ratio_range(confirmed or recorded)
    return {
        "study": source.study.study_name,
        "trial": trial.number,
        "recipe": trial.user_attrs.get("recipe_short", ""),
        "model_source": origin,
        "trial_figures": {
            "accuracy": trial.values[0],
            "latency_ms": trial.values[1],
            "measurement": recorded,
            "machine": trial.user_attrs.get("machine"),
            "confirmed": trial.user_attrs.get("confirmed"),
        },
        "remeasured": {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_record(config.target),
            "target": config.target.model_dump(),
            "validation_accuracy": measured.accuracy,
            "test_accuracy": test_accuracy,
            "ratio": measured.ratio.value,
            "ratio_spread": measured.ratio.spread,
            "ratio_interval": list(measured.ratio.interval),
            "latency": measured.latency.as_dict(),
            "reference_latency": measured.reference_latency.as_dict(),
            "size_mb": measured.size_mb,
            "zipped_mb": measured.zipped_mb,
            "ort_size_mb": ort_file.stat().st_size / 1e6,
        },
        "checks": {
            "validation_accuracy_equals_trial": measured.accuracy == trial.values[0],
            "trial_ratio_range": ratio_range,
            "trial_ratio_range_from": "confirmation" if confirmed else "search",
            "ratio_within_trial_range": ratio_range is not None
            and ratio_range[0] <= measured.ratio.value <= ratio_range[1],
        },
    }


def _ratio_range(measurement: dict[str, Any]) -> list[float] | None:
    """The lowest and highest of the trial's per-round ratios (each round measured both models
    back to back): the spread its ratio was measured with. A confirmed trial's are taken from
    its confirmation: more rounds, over a longer stretch of the machine's load."""
    try:
        candidate = measurement["latency"]["round_medians_ms"]
        fp32 = measurement["reference_latency"]["round_medians_ms"]
    except KeyError:
        return None
    ratios = [c / r for c, r in zip(candidate, fp32)]
    return [min(ratios), max(ratios)]


def _check_target(out: Path, force: bool) -> None:
    if not out.exists() and not out.is_symlink():
        return
    if not force:
        raise InputError("--out", f"{out} exists: choose another folder or pass --force to "
                                  "replace it")
    if not out.is_dir() or out.is_symlink():
        raise InputError("--out", f"{out} is not a folder: refusing to replace it")
    if any(out.iterdir()) and not (out / METRICS_FILE).is_file():
        raise InputError("--out", f"{out} holds files but is not an edgetune export (no "
                                  f"{METRICS_FILE}): refusing to replace it, even with --force")


def _move_into_place(staging: Path, out: Path) -> None:
    """Rename the complete folder to ``out``, replacing an earlier export only now."""
    if not out.exists():
        os.replace(staging, out)
        return
    aside = out.parent / f".{out.name}.replaced-{uuid.uuid4().hex[:8]}"
    os.replace(out, aside)
    os.replace(staging, out)
    shutil.rmtree(aside, ignore_errors=True)


def _write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")
