"""Recovery build step: fine-tune a pruned model, optionally distilled from the unpruned one.

Search space: ``edgetune.spaces.recovery``.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from edgetune.objectives.task import Task
from edgetune.objectives.training import StepCallback, TrainSettings, train
from edgetune.spaces.recovery import RecoveryRecipe


def recover(
    model: PreTrainedModel,
    teacher_logits: torch.Tensor | None,
    task: Task,
    recipe: RecoveryRecipe,
    batch_size: int,
    seed: int,
    callback: StepCallback | None = None,
    callback_every: int = 0,
) -> PreTrainedModel:
    """Train ``model`` for ``recipe.steps`` of ``recipe.batch_size`` rows (``batch_size`` when the
    recipe names none); the teacher's logits on the train split (``training.train_logits``) are
    used only when the recipe distils."""
    settings = TrainSettings(
        steps=recipe.steps, batch_size=recipe.batch_size or batch_size,
        learning_rate=recipe.learning_rate,
        dropout=recipe.dropout, precision=recipe.precision, seed=seed,
    )
    return train(
        model,
        task,
        settings,
        teacher_logits=teacher_logits if recipe.distillation else None,
        temperature=recipe.temperature,
        alpha=recipe.alpha,
        callback=callback,
        callback_every=callback_every,
    )
