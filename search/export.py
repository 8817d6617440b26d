"""``edgetune export``: one trial's model as a folder someone deploys.

The folder holds ``model.onnx``; ``model.ort`` and ``model.required_operators.config`` (ONNX
Runtime's mobile format and the operator list of a reduced build); the tokenizer's files (cutting
texts at the study's ``max_length``), or an image classifier's image processor;
``labels.json`` (label names in output order); ``recipe.json``; ``metrics.json`` (the trial's
figures and a fresh re-measurement here: the task metric (``metric``: its name) and accuracy on
validation and test, with their confusion matrices, latency interleaved with the FP32 reference,
and whether that latency is reliable: ``search/reliability.py``); and a README, which marks an
unreliable figure beside it.

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
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from edgetune.errors import InputError
from edgetune.objectives.accuracy import scored
from edgetune.objectives.candidate import measure_model
from edgetune.objectives.images import colour_mode
from edgetune.objectives.latency import MeasureConfig
from edgetune.objectives.machine import machine_key, machine_record
from edgetune.objectives.metrics import ACCURACY, score_confusion
from edgetune.objectives.predictor import LABELS_FILE
from edgetune.objectives.runtimes import RUNTIMES, formats, runtime_of
from edgetune.objectives.task import Task
from edgetune.search.config import StudyConfig
from edgetune.search.front import reference, reference_latencies
from edgetune.search.models import Models, Source
from edgetune.search.readme import ImageInputs, readme
from edgetune.search.record import Figures, TrialRecord, devices, records
from edgetune.search.reliability import Load, judge

METRICS_FILE = "metrics.json"
RECIPE_FILE = "recipe.json"
# An export may measure beyond the study's round limits, up to this many times the larger of
# them: a figure shipped with the model is worth a few more seconds, and twice the rounds narrow
# the ratio's interval by about 30% (its width shrinks as one over the root of the rounds).
EXTENDED_ROUNDS = 2


def export(source: Source, number: int, out: Path, force: bool,
           model_format: str | None = None) -> dict[str, Any]:
    """Write trial ``number``'s folder to ``out``; return its metrics.

    Raises:
        InputError: no such trial; it is not complete; ``model_format`` is not one of its
            runtime's; ``out`` exists (without ``force``, or it is not an earlier export); the
            model is gone and cannot be rebuilt here.
    """
    trial = exportable(source.study, number)
    runtime = trial.recipe.get("runtime") or source.config.target.runtime
    if model_format is not None and model_format not in formats(runtime):
        wanted = next(name for name in RUNTIMES if model_format in formats(name))
        raise InputError("--format", f"trial {number} was compiled for {RUNTIMES[runtime].title} "
                                     f"({', '.join(formats(runtime))}, or coreml): a "
                                     f"{model_format} model is a trial compiled for "
                                     f"{RUNTIMES[wanted].title} (target.runtime or "
                                     "space.runtime)")
    fp32 = reference(source.study)
    if fp32 is None:
        raise InputError("--trial", "the study's FP32 reference trial has not completed: there "
                                    "is nothing to measure the model against")
    return written_in_place(out, force, lambda folder, scratch: _write_folder(
        source, trial, fp32, folder, scratch))


def written_in_place(out: Path, force: bool,
                     write: Callable[[Path, Path], dict[str, Any]]) -> dict[str, Any]:
    """``write(folder, scratch)``'s export, made in a hidden folder beside ``out`` and renamed
    to ``out`` once complete, so that a failure leaves nothing behind; its metrics.

    Raises:
        InputError: ``out`` exists (without ``force``, or it is not an earlier export).
    """
    _check_target(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        with tempfile.TemporaryDirectory(prefix="edgetune-export-") as scratch:
            metrics = write(staging, Path(scratch))
        _move_into_place(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return metrics


def _write_folder(source: Source, trial: TrialRecord, fp32: TrialRecord, folder: Path,
                  scratch: Path) -> dict[str, Any]:
    models = Models(source, scratch)
    model = folder / f"model{models.suffix(trial)}"
    fetched = models.fetch(trial, model)
    task = models.load_task(trial, fetched)
    if not fetched:
        models.rebuild(trial, model)
    reference_model = scratch / f"reference{models.suffix(fp32)}"
    if not models.fetch(fp32, reference_model):
        models.rebuild(fp32, reference_model)
    deploy_files = runtime_of(model).deploy_files(model)
    reads = models.model_task(trial)  # with the trimmed tokenizer, if the trial trims
    if task.kind == "text":
        reads.tokenizer.model_max_length = source.config.task.max_length  # type: ignore[attr-defined]
    reads.tokenizer.save_pretrained(folder)  # type: ignore[attr-defined] # or image processor
    write_json(folder / LABELS_FILE, task.label_names)
    write_json(folder / RECIPE_FILE, trial.recipe)
    metrics = _metrics(source, trial, "artifact" if fetched else "rebuilt", model,
                       reference_model, task, reads, deploy_files)
    write_json(folder / METRICS_FILE, metrics)
    (folder / "README.md").write_text(
        readme(metrics, task.label_names, source.config, model, deploy_files, _images(task)))
    return metrics


def _images(task: Task) -> ImageInputs | None:
    """How an image task's inputs are made, for its README; None for a text task."""
    if task.image_size is None:
        return None
    return ImageInputs(size=task.image_size, mode=colour_mode(task.channels),
                       processor_resizes=task.image_size == task.native_size)


def exportable(study: optuna.Study, number: int) -> TrialRecord:
    """Trial ``number`` if it completed, else say why it has no model to export."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials:
        known = f"its trials are 0 to {max(trials)}" if trials else "it has no trials"
        raise InputError("--trial", f"study {study.study_name!r} has no trial {number} ({known})")
    trial = next(record for record in records(study) if record.number == number)
    if trial.state == TrialState.COMPLETE:
        return trial
    why = {
        TrialState.FAIL: "failed",
        TrialState.PRUNED: "was pruned",
        TrialState.RUNNING: "is still running",
        TrialState.WAITING: "is waiting to run",
    }[trial.state]
    failure = trial.failure
    if failure:
        why += f" in {failure.get('stage')}: {failure.get('type')}: {failure.get('error')}"[:200]
    pruned = trial.pruned  # early stopping or a repeat: {stage, reason}
    if pruned:
        why += f" in {pruned.get('stage')}: {pruned.get('reason')}"[:200]
    raise InputError("--trial", f"trial {number} {why}; only a complete trial has a model to "
                                "export (edgetune status lists the front)")


def _device_figures(study: optuna.Study, number: int, name: str) -> dict[str, dict[str, Any]]:
    """What each measurement agent's device measured of the trial (``edgetune agent``), its task
    metric under ``name``."""
    shown = {}
    for device in devices(study.get_trials(deepcopy=False)):
        record = next(r for r in records(study, device=device) if r.number == number)
        if record.measured is not None:
            shown[device] = {name: record.accuracy, "latency_ms": record.latency_ms,
                             "ratio": record.ratio, "machine": record.search_machine}
    return shown


def _metrics(source: Source, trial: TrialRecord, origin: str, model: Path,
             reference_model: Path, task: Task, reads: Task,
             deploy_files: list[Path]) -> dict[str, Any]:
    """The export's metrics: ``model`` reads ``task``'s texts as ``reads`` tokenizes them."""
    config = source.config
    machine = machine_record(config.target)
    protocol = extended_protocol(config)
    load_before = Load.now()
    measured = measure_model(model, reference_model, task, config.target, protocol,
                             model_task=reads)
    verdict = judge(measured.ratio, len(measured.latency.round_medians_ms), protocol,
                    Load.since(load_before), measured.reference_latency.median_ms,
                    _trial_reference_ms(trial, machine))
    tested = scored(model, reads.encoded("test"), task.labels("test"), config.target,
                    task.config.metric, task.label_names)
    name = config.task.metric_name
    assert measured.confusion is not None  # a fresh measurement counts its predictions
    # In this machine's milliseconds as the study shows them, else as the reference ran now.
    anchor = reference_latencies(source.study).get(machine_key(machine))
    here = Figures.beside(measured.latency, measured.reference_latency,
                          anchor.ms if anchor else measured.reference_latency.median_ms)
    # The range of the per-round ratios the trial's figure was measured with: the confirmation's
    # where there is one (more rounds, over a longer stretch of the machine's load).
    ratios = trial.figures.round_ratios() if trial.figures else None
    ratio_range = [min(ratios), max(ratios)] if ratios else None
    sizes = {path.name: path.stat().st_size / 1e6 for path in deploy_files}
    return {
        "study": source.study.study_name,
        "trial": trial.number,
        "recipe": trial.recipe_short,
        "model_source": origin,
        "metric": name,  # the task metric (task.metric): the first objective
        "trial_figures": {
            name: trial.accuracy,
            "latency_ms": trial.search_latency_ms,
            "shown_latency_ms": trial.latency_ms,  # confirmed where it was, as status shows it
            "shown_ratio": trial.ratio,
            "measurement": trial.measured.as_dict() if trial.measured else {},
            "machine": trial.search_machine,
            "confirmed": trial.confirmed.as_dict() if trial.confirmed else None,
        },
        "devices": _device_figures(source.study, trial.number, name),
        "remeasured": {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine,
            "target": config.target.model_dump(),
            # Accuracy beside the task metric (the same keys when the metric is accuracy)
            "validation_accuracy": score_confusion(ACCURACY, np.array(measured.confusion), []),
            "test_accuracy": score_confusion(ACCURACY, np.array(tested.confusion), []),
            f"validation_{name}": measured.accuracy,
            f"test_{name}": tested.value,
            "validation_confusion": measured.confusion,
            "test_confusion": tested.confusion,
            **here.as_dict(),
            "size_mb": measured.size_mb,
            "zipped_mb": measured.zipped_mb,
            "deploy_files_mb": sizes,
            **({"ort_size_mb": sizes["model.ort"]} if "model.ort" in sizes else {}),
            "reliability": verdict.as_dict(),
        },
        "checks": {
            f"validation_{name}_equals_trial": measured.accuracy == trial.accuracy,
            "trial_ratio_range": ratio_range,
            "trial_ratio_range_from": "confirmation" if trial.confirmed else "search",
            "ratio_within_trial_range": ratio_range is not None
            and ratio_range[0] <= here.ratio <= ratio_range[1],
            "remeasured_reliable": verdict.reliable,
            "remeasured_unreliable_because": verdict.reason,
        },
    }


def _trial_reference_ms(trial: TrialRecord, machine: dict[str, Any]) -> float | None:
    """The FP32 reference's latency beside the trial's figure, if measured on this kind of
    machine: how fast the reference runs here when the machine is as it was then."""
    if trial.figures is None or trial.machine_key != machine_key(machine):
        return None
    return trial.figures.reference_latency.get("median_ms")


def extended_protocol(config: StudyConfig) -> MeasureConfig:
    """The study's ``measure`` protocol, allowed ``EXTENDED_ROUNDS`` times the most rounds of
    a trial or a confirmation: it still stops as soon as the ratio is precise."""
    most = EXTENDED_ROUNDS * max(config.measure.max_rounds, config.confirm.max_rounds)
    return config.measure.model_copy(update={"max_rounds": most})


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


def write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")
