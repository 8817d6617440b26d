"""What a training setting costs edgetune's training loops on the default task, and what it buys.

Each loop trains from the same start once per variant of the compared setting, in alternating
order so that a drift of the machine's speed reaches every variant. Each model is scored on
validation and test with the torch model. Prints a Markdown section for ``benchmarks/RESULTS.md``.

- ``--compare dropout``: the model's own dropout (0.1 in MiniLM) against none
  (``TrainSettings.dropout = 0``), for the task fine-tuning (100 steps from the pretrained
  checkpoint) and two recoveries of the fine-tuned base with distillation (3 of 6 layers dropped,
  50 steps; 2 dropped, 75 steps).
- ``--compare batch``: steps of the fine-tuning's batch (32) against 16 rows
  (``recovery.batch_size``, ``qat.batch_size``), without dropout, for 100 distilled recovery
  steps at lr 2e-4 after dropping 3 and 4 of 6 layers, 50 steps at lr 3e-4 after dropping 3, and
  30 steps of QAT at lr 2e-5 (the ``dynamic`` export, scored with its INT8-grid weights, which
  ONNX Runtime's dynamic INT8 reproduces exactly).
- ``--compare precision``: fp32 against bfloat16 autocast (``recovery.precision``,
  ``qat.precision``), 16 rows a step without dropout, for 100 distilled recovery steps at lr 2e-4
  after dropping 3 layers, 3 layers and a quarter of the FFN neurons, and 4 layers, and 30 steps
  of QAT as above.

    flock /tmp/edgetune-heavy.lock python benchmarks/training.py \
        [--compare dropout|batch|precision] [--only QAT]
"""

from __future__ import annotations

import argparse
import datetime
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from edgetune.cpu import cpu_model
from edgetune.objectives.cache import Cache, default_cache_dir
from edgetune.objectives.checkpoint import load_classifier
from edgetune.objectives.finetune import fine_tuned_base
from edgetune.objectives.pruning import prune
from edgetune.objectives.qat import quantization_aware_training
from edgetune.objectives.task import Task, load_task
from edgetune.objectives.training import TrainSettings, torch_score, train, train_logits
from edgetune.search.config import load_config
from edgetune.spaces.pruning import StructuredPruning
from edgetune.spaces.qat import QatRecipe

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Loop:
    name: str
    start: Callable[[], torch.nn.Module]
    steps: int
    learning_rate: float
    teacher: torch.Tensor | None = None
    qat: bool = False  # train with NNCF's quantizers (objectives.qat) instead of plainly

    def run(self, model: torch.nn.Module, task: Task, settings: TrainSettings) -> torch.nn.Module:
        if not self.qat:
            return train(model, task, settings, teacher_logits=self.teacher)
        recipe = QatRecipe(steps=settings.steps, learning_rate=settings.learning_rate,
                           export="dynamic", dropout=settings.dropout or 0.0,
                           batch_size=settings.batch_size, precision=settings.precision)
        with tempfile.TemporaryDirectory() as folder:
            quantization_aware_training(model, task, recipe, settings.batch_size, settings.seed,
                                        Path(folder))
            return load_classifier(Path(folder))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "examples" / "bbc-news.yaml")
    parser.add_argument("--compare", choices=["dropout", "batch", "precision"],
                        default="dropout")
    parser.add_argument("--only", default="", help="run only the loops whose name holds this")
    args = parser.parse_args()
    config = load_config(args.config)
    task = load_task(config.task, args.config.parent)
    cache = Cache(Path(config.cache_dir) if config.cache_dir else default_cache_dir())
    base = fine_tuned_base(task, config.finetune, cache)
    teacher = train_logits(load_classifier(base), task)
    batch, seed = config.finetune.batch_size, config.finetune.seed

    def fine_tuning() -> torch.nn.Module:
        torch.manual_seed(seed)
        return load_classifier(task.model_path, task.label_names)

    def dropped(layers: int, ffn_kept: float = 1.0) -> Callable[[], torch.nn.Module]:
        return lambda: prune(load_classifier(base), StructuredPruning(
            layers_dropped=layers, layer_selection="even", ffn_kept=ffn_kept,
            scope="layer" if ffn_kept < 1 else None), task)

    variants: list[tuple[str, dict[str, object]]]
    if args.compare == "dropout":
        loops = [
            Loop("fine-tuning, 100 steps, lr 5e-5", fine_tuning, 100, 5e-5, None),
            Loop("recovery: drop 3 layers, 50 steps, lr 1e-4, KD", dropped(3), 50, 1e-4, teacher),
            Loop("recovery: drop 2 layers, 75 steps, lr 2e-4, KD", dropped(2), 75, 2e-4, teacher),
        ]
        variants = [("model's own (0.1)", {"dropout": None, "batch_size": batch}),
                    ("0", {"dropout": 0.0, "batch_size": batch})]
    elif args.compare == "precision":
        loops = [
            Loop("recovery: drop 3 layers, 100 steps, lr 2e-4, KD", dropped(3), 100, 2e-4,
                 teacher),
            Loop("recovery: drop 3 layers + FFN 3/4, 100 steps, lr 2e-4, KD", dropped(3, 0.75),
                 100, 2e-4, teacher),
            Loop("recovery: drop 4 layers, 100 steps, lr 2e-4, KD", dropped(4), 100, 2e-4,
                 teacher),
            Loop("QAT (dynamic export), 30 steps, lr 2e-5", lambda: load_classifier(base), 30,
                 2e-5, qat=True),
        ]
        variants = [(precision, {"dropout": 0.0, "batch_size": 16, "precision": precision})
                    for precision in ("fp32", "bf16")]
    else:
        loops = [
            Loop("recovery: drop 3 layers, 100 steps, lr 2e-4, KD", dropped(3), 100, 2e-4,
                 teacher),
            Loop("recovery: drop 4 layers, 100 steps, lr 2e-4, KD", dropped(4), 100, 2e-4,
                 teacher),
            Loop("recovery: drop 3 layers, 50 steps, lr 3e-4, KD", dropped(3), 50, 3e-4, teacher),
            Loop("QAT (dynamic export), 30 steps, lr 2e-5", lambda: load_classifier(base), 30,
                 2e-5, qat=True),
        ]
        variants = [(str(batch), {"dropout": 0.0, "batch_size": batch}),
                    ("16", {"dropout": 0.0, "batch_size": 16})]
    print(f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC  ")
    print(f"Machine: {cpu_model()} ×{os.cpu_count()} · torch {torch.__version__} · "
          f"{torch.get_num_threads()} threads · {config.task.max_length} tokens a row  ")
    print()
    print(f"| loop | {args.compare} | seconds | s / step | val acc | test acc |")
    print("|---|---|---:|---:|---:|---:|")
    for index, loop in enumerate(loop for loop in loops if args.only in loop.name):
        for label, setting in variants if index % 2 == 0 else reversed(variants):
            model = loop.start()
            settings = TrainSettings(steps=loop.steps, learning_rate=loop.learning_rate,
                                     seed=seed, **setting)  # type: ignore[arg-type]
            began = time.perf_counter()
            model = loop.run(model, task, settings)
            seconds = time.perf_counter() - began
            print(f"| {loop.name} | {label} | {seconds:.0f} | {seconds / loop.steps:.2f} "
                  f"| {_accuracy(model, task, 'validation'):.4f} "
                  f"| {_accuracy(model, task, 'test'):.4f} |", flush=True)


def _accuracy(model: torch.nn.Module, task: Task, split: str) -> float:
    return torch_score(model, task, split)  # the default task's metric: accuracy


if __name__ == "__main__":
    main()
