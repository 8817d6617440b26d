"""What a candidate is built from and built in: the study's workbench, the candidate's file and
timings, and the state its knobs' build steps pass from stage to stage.

The stages run in a fixed order (``spaces.knob.STAGES``, with the compilation for the recipe's
runtime after the torch stages) so that every combination the space allows builds:

    fine-tuned base ─► prune + recover ─► QAT ─► compile ─► fuse ─► quantize

Each knob of the recipe runs its step of each stage it declares; a step works on ``Build``: the
current checkpoint before the compilation, the current model file (``.onnx``, ``.tflite``, ...)
after it. Pruned + recovered models, QAT-trained models and compilations are cached, so
quantization variants of one pruned model reuse it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
import torch
from transformers import PreTrainedModel

from edgetune.objectives.cache import Cache
from edgetune.objectives.checkpoint import load_classifier
from edgetune.objectives.export import EXPORT_FORMAT
from edgetune.objectives.latency import MeasureConfig
from edgetune.objectives.runtimes import DEFAULT, RUNTIMES, compiler
from edgetune.objectives.target import TargetConfig
from edgetune.objectives.task import Task
from edgetune.objectives.training import StepCallback, train_logits
from edgetune.spaces.recipe import Recipe


@dataclass
class Workbench:
    """What every candidate of a study is built from and measured against."""

    task: Task
    base: Path  # the fine-tuned checkpoint folder
    cache: Cache
    target: TargetConfig
    measure: MeasureConfig
    batch_size: int  # for recovery and QAT training
    seed: int
    _teacher_logits: torch.Tensor | None = field(default=None, init=False, repr=False)

    @property
    def model_type(self) -> str:
        return json.loads((self.base / "config.json").read_text())["model_type"]

    @property
    def input_names(self) -> list[str]:
        return list(self.task.encoded("validation"))

    def load(self, checkpoint: Path) -> PreTrainedModel:
        """A checkpoint of this study, trusting remote code only when the task config says so."""
        return load_classifier(checkpoint, trust_remote_code=self.task.config.trust_remote_code)

    def teacher_logits(self) -> torch.Tensor:
        """The fine-tuned base's logits on the train split: the distillation targets of every
        recovery, computed on first use and cached beside the base (a forward pass over the whole
        split costs as much as a short recovery)."""
        if self._teacher_logits is None:
            entry = self.cache.get_or_build(
                "teacher", {"stage": "train_logits", "base": self.base.name},
                lambda folder: torch.save(train_logits(self.load(self.base), self.task),
                                          folder / "logits.pt"))
            self._teacher_logits = torch.load(entry / "logits.pt", weights_only=True)
        return self._teacher_logits

    def reference(self) -> Path:
        """The FP32 fine-tuned base compiled for the target's runtime: every trial's yardstick."""
        return self.compile(self.base, self.target.runtime)

    def compile(self, checkpoint: Path, runtime: str) -> Path:
        """The cached FP32 compilation of a checkpoint folder for ``runtime``: its model file."""
        info = RUNTIMES[runtime]
        key: dict[str, object] = {"stage": "export", "checkpoint": checkpoint.name,
                                  "inputs": self.input_names, "format": EXPORT_FORMAT}
        if runtime != DEFAULT:  # compiled for the target's shapes (ONNX keeps them open)
            key |= {"runtime": runtime, "batch_size": self.target.batch_size,
                    "sequence_length": self.target.sequence_length}
        model_file = f"model{info.suffix}"
        folder = self.cache.get_or_build(
            "onnx" if runtime == DEFAULT else runtime, key,
            lambda folder: compiler(runtime)(self.load(checkpoint), self.input_names,
                                             folder / model_file, self.target))
        return folder / model_file

    def export(self, checkpoint: Path) -> Path:
        """The cached FP32 ONNX export of a checkpoint folder (a folder holding model.onnx)."""
        return self.compile(checkpoint, DEFAULT).parent


@dataclass
class Candidate:
    path: Path
    stage_seconds: dict[str, float] = field(default_factory=dict)
    notes: dict[str, object] = field(default_factory=dict)
    on_stage: Callable[[str], None] | None = None  # told each stage's name as it starts
    # The task as the model reads its texts, where a step rewrote the tokenizer (vocabulary
    # trimming); None: the study's task.
    task: Task | None = None


@dataclass
class Build:
    """A candidate being built: what its knobs' steps read and advance, stage by stage."""

    recipe: Recipe
    bench: Workbench
    candidate: Candidate
    checkpoint: Path  # the torch checkpoint the torch stages work on (the base to start)
    model: Path | None = None  # the compiled model the later stages work on, once compiled
    done: bool = False  # a step wrote the candidate's final file: no later stage runs
    callback: StepCallback | None = None  # told the model every ``callback_every`` steps
    callback_every: int = 0

    @property
    def workdir(self) -> Path:
        return self.candidate.path.parent

    @property
    def calibration(self) -> dict[str, np.ndarray]:
        """The calibration split, tokenized: what post-training quantization calibrates on."""
        return self.bench.task.encoded("calibration")


class StageError(Exception):
    """A build or measurement stage failed; ``stage`` names it, the cause is chained."""

    def __init__(self, stage: str, error: BaseException) -> None:
        super().__init__(f"{stage}: {type(error).__name__}: {error}")
        self.stage = stage


@contextmanager
def stage(candidate: Candidate, name: str) -> Iterator[None]:
    """Time the block as stage ``name`` of ``candidate`` (telling ``on_stage`` first); an error
    in it becomes a ``StageError`` naming the stage."""
    if candidate.on_stage is not None:
        candidate.on_stage(name)
    start = time.perf_counter()
    try:
        yield
    except optuna.TrialPruned:
        raise
    except Exception as error:
        raise StageError(name, error) from error
    finally:
        candidate.stage_seconds[name] = candidate.stage_seconds.get(name, 0.0) + (
            time.perf_counter() - start
        )
