"""The one training loop: fine-tuning the base, recovery after pruning, and QAT all use it.

Batches are drawn from the tokenized train split with a seeded generator, so the same settings
train the same model. With a teacher, the loss mixes cross-entropy with the KL divergence to the
teacher's temperature-softened logits (Hinton et al., 2015), scaled by T² so its gradients keep
their size as T changes. The teacher is frozen, so its logits on the train split are computed
once (``train_logits``) and looked up per batch: a teacher forward pass per step cost a quarter
to two fifths of each recovery step, and every distilled trial of a study shares the same ones.

``TrainSettings.dropout`` overrides the model's dropout while it trains: recovery and QAT re-train
an already fine-tuned model for tens of steps, where dropout's regularisation buys nothing
measurable, while its random masks (drawn one element at a time by torch's CPU generator) cost a
sixth to three tenths of every step on the default task (``benchmarks/RESULTS.md``, training).

``torch_score`` scores a torch model on the task metric while it trains (early stopping): a cheap
look in batches of ``TRAINING_LOOK_BATCH``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from transformers import get_linear_schedule_with_warmup

from edgetune.objectives.metrics import score
from edgetune.objectives.task import Task
from edgetune.spaces.base import Precision, Strict

TRAINING_LOOK_BATCH = 32

StepCallback = Callable[[int, torch.nn.Module], None]


class TrainSettings(Strict):
    steps: int = Field(ge=0)
    batch_size: int = Field(default=32, ge=1)
    learning_rate: float = Field(default=5e-5, gt=0)
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    weight_decay: float = Field(default=0.01, ge=0)
    dropout: float | None = Field(
        default=None, ge=0, lt=1, description="every dropout's rate while training (None: the "
        "model's own)")
    precision: Precision = Field(
        default="fp32", description="bf16: the forward pass under CPU autocast to bfloat16")
    seed: int = 0


def train(
    model: torch.nn.Module,
    task: Task,
    settings: TrainSettings,
    teacher_logits: torch.Tensor | None = None,
    temperature: float = 2.0,
    alpha: float = 0.5,
    callback: StepCallback | None = None,
    callback_every: int = 0,
) -> torch.nn.Module:
    """Train ``model`` in place on the train split and return it in eval mode.

    ``teacher_logits`` (one row per train row, from ``train_logits``) turns on distillation.
    ``callback(step, model)`` runs every ``callback_every`` steps (and may raise to stop early,
    as an Optuna pruner does).
    """
    if settings.steps == 0:
        return model.eval()
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    inputs = {name: torch.tensor(array) for name, array in task.encoded("train").items()}
    labels = torch.tensor(task.labels("train"))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable, lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    schedule = get_linear_schedule_with_warmup(
        optimizer, int(settings.warmup_ratio * settings.steps), settings.steps
    )
    model.train()
    with _dropout(model, settings.dropout):
        for step in range(1, settings.steps + 1):
            rows = torch.randint(len(labels), (settings.batch_size,), generator=generator)
            batch = {name: tensor[rows] for name, tensor in inputs.items()}
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=settings.precision == "bf16"):
                logits = model(**batch).logits.float()
            loss = F.cross_entropy(logits, labels[rows])
            if teacher_logits is not None:
                loss = ((1 - alpha) * loss
                        + alpha * distillation_loss(logits, teacher_logits[rows], temperature))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss is {loss.item()} at step {step}")
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            if callback is not None and callback_every and step % callback_every == 0:
                model.eval()
                callback(step, model)
                model.train()
    return model.eval()


@contextmanager
def _dropout(model: torch.nn.Module, rate: float | None) -> Iterator[None]:
    """Every ``nn.Dropout`` of ``model`` at ``rate`` for the block (attention dropout included:
    transformers reads its rate from the module), then back to the model's own."""
    modules = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    own = [m.p for m in modules]
    if rate is not None:
        for module in modules:
            module.p = rate
    try:
        yield
    finally:
        for module, p in zip(modules, own, strict=True):
            module.p = p


def train_logits(model: torch.nn.Module, task: Task, batch_size: int = 64) -> torch.Tensor:
    """``model``'s logits (eval mode) on every row of the train split, in row order."""
    model.eval()
    inputs = {name: torch.tensor(array) for name, array in task.encoded("train").items()}
    rows = len(task.labels("train"))
    with torch.no_grad():
        return torch.cat([
            model(**{name: tensor[start:start + batch_size] for name, tensor in inputs.items()})
            .logits for start in range(0, rows, batch_size)
        ])


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL(teacher ‖ student) on temperature-softened distributions, scaled by T²."""
    return (
        F.kl_div(
            F.log_softmax(student_logits / temperature, dim=-1),
            F.softmax(teacher_logits / temperature, dim=-1),
            reduction="batchmean",
        )
        * temperature**2
    )


def torch_score(model: torch.nn.Module, task: Task, split: str = "validation") -> float:
    """The task metric of a torch classifier in eval mode on ``split``: a cheap look while it is
    still training."""
    inputs = task.encoded(split)
    rows = len(task.labels(split))
    with torch.no_grad():
        logits = np.concatenate([
            model(**{name: torch.from_numpy(value[start : start + TRAINING_LOOK_BATCH])
                     for name, value in inputs.items()}).logits.numpy()
            for start in range(0, rows, TRAINING_LOOK_BATCH)])
    return score(task.config.metric, logits, task.labels(split), task.label_names)
