"""From a recipe to an ONNX candidate and its measured numbers.

The stages run in a fixed order so that every combination the space allows builds:

    fine-tuned base ─► prune ─► recover ─┬──────────────────────┬─► export ─► fuse ─► PTQ
                                         └─► QAT (NNCF) ─┬─ dynamic: INT8-grid weights ┘
                                                         └─ qdq: export Q/DQ

PTQ is ONNX Runtime's dynamic or static INT8 or NNCF's; after QAT's ``dynamic`` export it is the
per-channel dynamic INT8 that reproduces the trained grid.

Pruned + recovered models, QAT-trained models and exports are cached, so quantization variants
of one pruned model reuse it. Each stage's wall time is recorded on the candidate.
"""

from __future__ import annotations

import shutil
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import torch
from transformers import PreTrainedModel

from edgetune.objectives.accuracy import accuracy
from edgetune.objectives.cache import Cache
from edgetune.objectives.checkpoint import load_classifier, save_classifier
from edgetune.objectives.export import EXPORT_FORMAT, export_onnx
from edgetune.objectives.graph import fuse
from edgetune.objectives.latency import (
    Latency,
    MeasureConfig,
    Ratio,
    latency_inputs,
    measure,
    ratio,
)
from edgetune.objectives.pruning import SHAPES_FILE, make_permanent, prune, write_shapes
from edgetune.objectives.qat import (
    BAKED_WEIGHTS_QUANTIZATION,
    QDQ_FILE,
    quantization_aware_training,
)
from edgetune.objectives.quantization import (
    quantize_dynamic_int8,
    quantize_nncf,
    quantize_static_int8,
)
from edgetune.objectives.recovery import recover
from edgetune.objectives.target import TargetConfig
from edgetune.objectives.task import Task
from edgetune.objectives.training import StepCallback, train_logits
from edgetune.spaces.qat import QatRecipe
from edgetune.spaces.quantization import (
    DynamicQuantization,
    NncfQuantization,
    QuantizationRecipe,
    StaticQuantization,
)
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
        import json

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
        """The FP32 ONNX export of the fine-tuned base: the yardstick of every trial."""
        return self.export(self.base) / "model.onnx"

    def export(self, checkpoint: Path) -> Path:
        """The cached FP32 ONNX export of a checkpoint folder (a folder holding model.onnx)."""
        key = {"stage": "export", "checkpoint": checkpoint.name, "inputs": self.input_names,
               "format": EXPORT_FORMAT}
        return self.cache.get_or_build(
            "onnx", key,
            lambda folder: export_onnx(self.load(checkpoint), self.input_names,
                                       folder / "model.onnx"),
        )


@dataclass
class Candidate:
    path: Path
    stage_seconds: dict[str, float] = field(default_factory=dict)
    notes: dict[str, object] = field(default_factory=dict)
    on_stage: Callable[[str], None] | None = None  # told each stage's name as it starts


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
    """Build ``recipe``'s ONNX model at ``candidate.path``, timing each stage on ``candidate``.

    Raises:
        StageError: a stage failed; the timings up to it stay on ``candidate``.
    """
    workdir = candidate.path.parent
    workdir.mkdir(parents=True, exist_ok=True)
    with _stage(candidate, "prune_recover"):
        checkpoint = _pruned(recipe, bench, callback, callback_every)
    quantization: QuantizationRecipe = recipe.quantization
    if isinstance(quantization, QatRecipe):
        with _stage(candidate, "qat"):
            trained = trained_with_qat(checkpoint, quantization, bench, callback,
                                       callback_every)
        if quantization.export == "qdq":
            shutil.copyfile(trained / QDQ_FILE, candidate.path)
            return candidate
        checkpoint, quantization = trained, BAKED_WEIGHTS_QUANTIZATION
    with _stage(candidate, "export"):
        current = bench.export(checkpoint) / "model.onnx"
    if recipe.graph.fusion:
        with _stage(candidate, "fuse"):
            fused = workdir / "fused.onnx"
            # ONNX Runtime has no static integer Attention: static INT8 of a fused attention
            # would leave its Q/K/V projections in FP32 (measured slower, benchmarks/RESULTS.md).
            attention = not isinstance(quantization, StaticQuantization)
            candidate.notes["fused_ops"] = fuse(current, fused, bench.model_type, attention)
            current = fused
    with _stage(candidate, "quantize"):
        calibration = bench.task.encoded("calibration")
        if isinstance(quantization, DynamicQuantization):
            quantize_dynamic_int8(current, candidate.path, quantization)
        elif isinstance(quantization, StaticQuantization):
            quantize_static_int8(current, candidate.path, quantization, calibration)
        elif isinstance(quantization, NncfQuantization):
            quantize_nncf(current, candidate.path, quantization, calibration)
        else:
            shutil.copyfile(current, candidate.path)
    return candidate


def evaluate(candidate: Candidate, bench: Workbench, split: str = "validation") -> Measurement:
    """Accuracy on ``split`` and latency measured interleaved with the FP32 reference."""
    with _stage(candidate, "measure"):
        return measure_model(candidate.path, bench.reference(), bench.task, bench.target,
                             bench.measure, split)


def measure_model(model: Path, reference: Path, task: Task, target: TargetConfig,
                  settings: MeasureConfig, split: str = "validation") -> Measurement:
    """``model``'s accuracy on ``split`` and its latency interleaved with ``reference``'s.

    A trial and the export of its model both measure through here, so they agree exactly on
    accuracy (same data, same runtime).
    """
    score = accuracy(model, task.encoded(split), task.labels(split), target)
    inputs = latency_inputs(task.encoded("validation"), target, settings.inputs)
    latencies = measure({"candidate": model, "reference": reference}, inputs, target, settings,
                        reference="reference")
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


def training_phases(recipe: Recipe, bench: Workbench) -> list[tuple[str, int]]:
    """The training loops ``build`` will run for ``recipe``, in order, with their step counts.

    A pruned + recovered model already in the cache is not trained again. (Another worker may
    finish the same entry meanwhile: then a listed recovery does not run.)
    """
    phases = []
    if (recipe.pruning.method != "none" and recipe.recovery.steps
            and not bench.cache.path("pruned", _pruned_key(recipe, bench)).is_dir()):
        phases.append(("recovery", recipe.recovery.steps))
    if isinstance(recipe.quantization, QatRecipe):
        phases.append(("qat", recipe.quantization.steps))
    return phases


def _pruned_key(recipe: Recipe, bench: Workbench) -> dict[str, object]:
    return {
        "stage": "prune_recover",
        "base": bench.base.name,
        "pruning": recipe.pruning.model_dump(),
        "recovery": recipe.recovery.model_dump(),
        "batch_size": bench.batch_size,
        "seed": bench.seed,
    }


def _pruned(recipe: Recipe, bench: Workbench, callback: StepCallback | None,
            callback_every: int) -> Path:
    if recipe.pruning.method == "none":
        return bench.base
    key = _pruned_key(recipe, bench)

    def build_pruned(folder: Path) -> None:
        model = prune(bench.load(bench.base), recipe.pruning, bench.task)
        teacher = bench.teacher_logits() if recipe.recovery.distillation else None
        recover(model, teacher, bench.task, recipe.recovery, bench.batch_size, bench.seed,
                callback, callback_every)
        pruned = make_permanent(model)
        save_classifier(pruned, folder)
        write_shapes(pruned, folder)

    return bench.cache.get_or_build("pruned", key, build_pruned)


def trained_with_qat(checkpoint: Path, recipe: QatRecipe, bench: Workbench,
                     callback: StepCallback | None = None, callback_every: int = 0) -> Path:
    """The cached QAT result of ``checkpoint``: a checkpoint folder, or a folder with Q/DQ ONNX."""
    key = {
        "stage": "qat",
        "checkpoint": checkpoint.name,
        "qat": recipe.model_dump(),
        "batch_size": bench.batch_size,
        "seed": bench.seed,
    }

    def build_qat(folder: Path) -> None:
        quantization_aware_training(bench.load(checkpoint), bench.task, recipe,
                                    bench.batch_size, bench.seed, folder, callback,
                                    callback_every)
        if recipe.export == "dynamic" and (checkpoint / SHAPES_FILE).exists():
            shutil.copyfile(checkpoint / SHAPES_FILE, folder / SHAPES_FILE)

    return bench.cache.get_or_build("qat", key, build_qat)


class StageError(Exception):
    """A build or measurement stage failed; ``stage`` names it, the cause is chained."""

    def __init__(self, stage: str, error: BaseException) -> None:
        super().__init__(f"{stage}: {type(error).__name__}: {error}")
        self.stage = stage


@contextmanager
def _stage(candidate: Candidate, name: str) -> Iterator[None]:
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
