"""Task fine-tuning (the seed's step 2): the base every candidate is compressed from.

Full fine-tuning updates every weight; ``lora`` trains low-rank adapters with peft and merges
them into the weights before compression, so every later stage sees a plain model. The result is
cached by a hash of the model files, the data and these settings: a resumed or second study on
the same base does not fine-tune again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from edgetune.errors import InputError
from edgetune.objectives.cache import Cache, file_hash
from edgetune.objectives.checkpoint import load_classifier, save_classifier
from edgetune.objectives.classifiers import AUTO_CLASSES
from edgetune.objectives.task import Task
from edgetune.objectives.training import TrainSettings, train
from edgetune.spaces.base import Strict


class LoraConfig(Strict):
    r: int = Field(default=16, ge=1)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    target_modules: list[str] = Field(
        default=["query", "key", "value", "dense"], min_length=1,
        description="names of the Linear layers to adapt (BERT and RoBERTa naming by default)",
    )


class FinetuneConfig(Strict):
    """The ``finetune:`` section."""

    method: Literal["full", "lora", "none"] = Field(
        default="full", description="none: the checkpoint is already fine-tuned for the task"
    )
    steps: int = Field(default=100, ge=0)
    batch_size: int = Field(default=32, ge=1)
    learning_rate: float = Field(default=5e-5, gt=0)
    dropout: float | None = Field(
        default=None, ge=0, lt=1,
        description="every dropout's rate while fine-tuning (default: the checkpoint's own)",
    )
    seed: int = 0
    lora: LoraConfig = LoraConfig()


def check_finetune(task: Task, config: FinetuneConfig) -> None:
    """Refuse, before any work starts, LoRA settings that peft cannot apply to the model.

    peft itself decides (on a weightless copy of the model, built on the meta device), so the
    check and the training agree on what fits.

    Raises:
        InputError: no default target modules for the architecture, or none of the named ones.
    """
    if config.method != "lora":
        return
    import peft
    from transformers import AutoConfig

    trust = task.config.trust_remote_code
    model_config = AutoConfig.from_pretrained(task.model_path, trust_remote_code=trust,
                                              num_labels=len(task.label_names))
    with torch.device("meta"):
        model = AUTO_CLASSES[task.kind].from_config(model_config, trust_remote_code=trust)
    try:
        peft.get_peft_model(model, _peft_config(config.lora))
    except ValueError as error:
        raise InputError(
            "finetune.lora.target_modules",
            f"peft cannot adapt this {model_config.model_type} model: {error} (name the model's "
            "Linear layers to adapt, e.g. the attention query and value projections)",
        ) from error


def base_key(task: Task, config: FinetuneConfig) -> dict[str, Any]:
    """What determines the fine-tuned base: its key in the cache (kind ``base``)."""
    key: dict[str, Any] = {
        "stage": "finetune",
        "model": file_hash(task.model_path),
        "data": task.dataset.fingerprint,
        "max_length": task.config.max_length,
        "settings": config.model_dump(),
    }
    return key if task.kind == "text" else key | {"image_size": task.image_size}


def fine_tuned_base(task: Task, config: FinetuneConfig, cache: Cache) -> Path:
    """The task-fine-tuned checkpoint folder, built once and then read from the cache."""
    return cache.get_or_build("base", base_key(task, config),
                              lambda folder: _fine_tune(task, config, folder))


def _fine_tune(task: Task, config: FinetuneConfig, folder: Path) -> None:
    torch.manual_seed(config.seed)  # the new classification head starts the same every time
    model = load_classifier(task.model_path, task.label_names,
                            trust_remote_code=task.config.trust_remote_code, kind=task.kind)
    settings = TrainSettings(
        steps=config.steps if config.method != "none" else 0,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        dropout=config.dropout,
        seed=config.seed,
    )
    if config.method == "lora":
        model = _train_lora(model, task, config, settings)
    else:
        train(model, task, settings)
    save_classifier(model, folder)
    task.tokenizer.save_pretrained(folder)  # type: ignore[attr-defined] # or image processor


def _train_lora(model, task: Task, config: FinetuneConfig, settings: TrainSettings):  # type: ignore[no-untyped-def]
    import peft

    adapted = peft.get_peft_model(model, _peft_config(config.lora))
    train(adapted, task, settings)
    return adapted.merge_and_unload().eval()


def _peft_config(lora: LoraConfig):  # type: ignore[no-untyped-def]
    import peft

    return peft.LoraConfig(
        task_type=peft.TaskType.SEQ_CLS,  # the new classification head trains in full
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
    )
