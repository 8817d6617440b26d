"""From a recipe to a candidate model file and its measured numbers.

``build`` runs the recipe's knobs stage by stage (``edgetune.objectives.build``): each knob
declares its steps (``spaces.knob.Knob``), so this module knows no knob by name. ``evaluate``
measures the result beside the FP32 reference. Each stage's wall time is recorded on the
candidate.
"""

from __future__ import annotations

import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edgetune.objectives.accuracy import accuracy
from edgetune.objectives.build import Build, Candidate, Workbench, stage
from edgetune.objectives.latency import (
    Latency,
    MeasureConfig,
    Ratio,
    latency_inputs,
    measure,
    ratio,
)
from edgetune.objectives.runtimes import RUNTIMES
from edgetune.objectives.target import TargetConfig
from edgetune.objectives.task import Task
from edgetune.objectives.training import StepCallback
from edgetune.spaces.knob import STAGES, TORCH_STAGES, Phases, Stage
from edgetune.spaces.recipe import Recipe


@dataclass
class Measurement:
    accuracy: float
    latency: Latency
    reference_latency: Latency
    size_mb: float
    zipped_mb: float

    @property
    def ratio(self) -> Ratio:
        return ratio(self.latency, self.reference_latency)


def build(recipe: Recipe, bench: Workbench, candidate: Candidate,
          callback: StepCallback | None = None, callback_every: int = 0) -> Candidate:
    """Build ``recipe``'s model at ``candidate.path``, timing each stage on ``candidate``.

    Raises:
        StageError: a stage failed; the timings up to it stay on ``candidate``.
    """
    candidate.path.parent.mkdir(parents=True, exist_ok=True)
    state = Build(recipe=recipe, bench=bench, candidate=candidate, checkpoint=bench.base,
                  callback=callback, callback_every=callback_every)
    compiles = not any(knob.compiles for knob in recipe.knobs())
    for name in STAGES:
        _run_stage(state, name)
        if name == TORCH_STAGES[-1] and compiles and not state.done:
            with stage(candidate, "export"):
                state.model = bench.compile(state.checkpoint, runtime_name(recipe, bench))
    if not state.done and state.model != candidate.path:
        assert state.model is not None
        shutil.copyfile(state.model, candidate.path)
    return candidate


def torch_checkpoint(recipe: Recipe, bench: Workbench, candidate: Candidate) -> Path | None:
    """The checkpoint folder ``recipe``'s torch stages (pruning, recovery, QAT) end with, what a
    compiler outside the study's runtimes (Core ML) starts from; None where a torch stage writes
    the final model itself (QAT's Q/DQ export).

    Raises:
        StageError: a stage failed.
    """
    candidate.path.parent.mkdir(parents=True, exist_ok=True)
    state = Build(recipe=recipe, bench=bench, candidate=candidate, checkpoint=bench.base)
    for name in TORCH_STAGES:
        _run_stage(state, name)
    return None if state.done else state.checkpoint


def _run_stage(state: Build, name: Stage) -> None:
    """Each of the recipe's knobs' steps of stage ``name``, until one writes the final model."""
    for knob in state.recipe.knobs():
        if name in knob.steps and not state.done:
            with stage(state.candidate, name):
                knob.steps[name](state)


def runtime_name(recipe: Recipe, bench: Workbench) -> str:
    """The runtime ``recipe`` is compiled for: its own, or the study's."""
    return recipe.runtime or bench.target.runtime


def model_file(recipe: Recipe, bench: Workbench) -> str:
    """The file name of ``recipe``'s model: ``model`` with its runtime's suffix."""
    return f"model{RUNTIMES[runtime_name(recipe, bench)].suffix}"


def evaluate(candidate: Candidate, bench: Workbench, split: str = "validation") -> Measurement:
    """Accuracy on ``split`` and latency measured interleaved with the FP32 reference."""
    with stage(candidate, "measure"):
        return measure_model(candidate.path, bench.reference(), bench.task, bench.target,
                             bench.measure, split, candidate.task)


def measure_model(model: Path, reference: Path, task: Task, target: TargetConfig,
                  settings: MeasureConfig, split: str = "validation",
                  model_task: Task | None = None) -> Measurement:
    """``model``'s accuracy on ``split`` and its latency interleaved with ``reference``'s.

    ``model_task`` is ``task`` as the model reads it where its tokenizer differs from the
    reference's (a trimmed vocabulary): the model gets its tokens, the reference ``task``'s.
    A trial and the export of its model both measure through here, so they agree exactly on
    accuracy (same data, same runtime).
    """
    score = accuracy(model, (model_task or task).encoded(split), task.labels(split), target)
    inputs = latency_inputs(task.encoded("validation"), target, settings.inputs)
    own = None if model_task is None else {
        "candidate": latency_inputs(model_task.encoded("validation"), target, settings.inputs)}
    latencies = measure({"candidate": model, "reference": reference}, inputs, target, settings,
                        reference="reference", own_inputs=own)
    return Measurement(
        accuracy=score,
        latency=latencies["candidate"],
        reference_latency=latencies["reference"],
        size_mb=model.stat().st_size / 1e6,
        zipped_mb=zipped_size(model) / 1e6,
    )


def zipped_size(path: Path) -> int:
    """Bytes of the file deflated as in a .zip download: what unstructured sparsity saves."""
    target = path.with_suffix(".zip")
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(path, path.name)
    size = target.stat().st_size
    target.unlink()
    return size


def training_phases(recipe: Recipe, bench: Workbench) -> Phases:
    """The training loops ``build`` will run for ``recipe``, in order, with their step counts."""
    return [phase for knob in recipe.knobs() if knob.training is not None
            for phase in knob.training(recipe, bench)]
