"""From a recipe to a candidate model file and its measured numbers.

``build`` runs the recipe's knobs stage by stage (``edgetune.objectives.build``): each knob
declares its steps (``spaces.knob.Knob``), so this module knows no knob by name. ``evaluate``
measures the result beside the FP32 reference. Each stage's wall time is recorded on the
candidate.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from edgetune.objectives.build import Build, Candidate, Workbench, stage
from edgetune.objectives.latency import MeasureConfig
from edgetune.objectives.measurement import Measurement, measure_arrays
from edgetune.objectives.runtimes import RUNTIMES
from edgetune.objectives.target import TargetConfig
from edgetune.objectives.task import Task
from edgetune.objectives.training import StepCallback
from edgetune.spaces.knob import STAGES, TORCH_STAGES, Phases, Stage
from edgetune.spaces.recipe import Recipe


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
    """``model``'s task metric on ``split`` and its latency interleaved with ``reference``'s.

    ``model_task`` is ``task`` as the model reads it where its tokenizer differs from the
    reference's (a trimmed vocabulary): the model gets its tokens, the reference ``task``'s.
    """
    reads = model_task or task
    return measure_arrays(model, reference, reads.encoded(split), task.labels(split),
                          reads.encoded("validation"), target, settings, task.config.metric,
                          task.label_names,
                          None if model_task is None else task.encoded("validation"))


def training_phases(recipe: Recipe, bench: Workbench) -> Phases:
    """The training loops ``build`` will run for ``recipe``, in order, with their step counts."""
    return [phase for knob in recipe.knobs() if knob.training is not None
            for phase in knob.training(recipe, bench)]
