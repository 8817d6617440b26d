"""LoRA fine-tuning of the base: it learns the task, and merges into a plain model that exports."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from edgetune.errors import InputError
from edgetune.objectives.accuracy import accuracy
from edgetune.objectives.cache import Cache
from edgetune.objectives.checkpoint import load_classifier
from edgetune.objectives.data import DataConfig
from edgetune.objectives.export import export_onnx
from edgetune.objectives.finetune import FinetuneConfig, LoraConfig, check_finetune, fine_tuned_base
from edgetune.objectives.target import TargetConfig
from edgetune.objectives.task import Task, TaskConfig, load_task
from edgetune.search.cli import cli

from conftest import build_tiny_model
from helpers import tiny_config, write_config

TARGET = TargetConfig(threads=1)


def onnx_accuracy(checkpoint: Path, task: Task, folder: Path) -> float:
    model = export_onnx(load_classifier(checkpoint, task.label_names),
                        list(task.encoded("validation")), folder / "model.onnx")
    return accuracy(model, task.encoded("validation"), task.labels("validation"), TARGET)


def test_lora_learns_the_task_and_merges_into_plain_linear_layers(
        tiny_model: Path, tiny_csv: Path, tmp_path: Path) -> None:
    task = load_task(TaskConfig(model=str(tiny_model), data=DataConfig(path=str(tiny_csv)),
                                max_length=32))
    settings = FinetuneConfig(method="lora", steps=60, batch_size=16, learning_rate=5e-3)
    untrained = onnx_accuracy(tiny_model, task, tmp_path / "untrained")

    base = fine_tuned_base(task, settings, Cache(tmp_path / "cache"))

    model = load_classifier(base)
    assert not any("lora" in name for name in model.state_dict())
    assert {type(m) for m in model.modules() if "Linear" in type(m).__name__} == {torch.nn.Linear}
    original = load_classifier(tiny_model, task.label_names)
    assert not torch.equal(model.bert.encoder.layer[0].attention.self.query.weight,
                           original.bert.encoder.layer[0].attention.self.query.weight)  # merged
    assert torch.equal(model.bert.embeddings.word_embeddings.weight,
                       original.bert.embeddings.word_embeddings.weight)  # frozen, as LoRA does
    trained = onnx_accuracy(base, task, tmp_path / "trained")  # exports and runs under ORT
    assert untrained < 0.5 and trained > 0.9


def test_lora_settings_peft_cannot_apply_are_refused_before_any_work(
        tmp_path: Path, tiny_csv: Path) -> None:
    folder = build_tiny_model(tmp_path / "distilbert", "distilbert")
    task = load_task(TaskConfig(model=str(folder), data=DataConfig(path=str(tiny_csv)),
                                max_length=32))
    with pytest.raises(InputError) as error:  # peft has no default targets for DistilBERT
        check_finetune(task, FinetuneConfig(method="lora"))
    assert error.value.where == "finetune.lora.target_modules"
    with pytest.raises(InputError):
        check_finetune(task, FinetuneConfig(method="lora",
                                            lora=LoraConfig(target_modules=["query"])))
    check_finetune(task, FinetuneConfig(method="lora",
                                        lora=LoraConfig(target_modules=["q_lin", "v_lin"])))

    config = write_config(tmp_path, tiny_config(folder, tiny_csv, finetune={"method": "lora"},
                                                space={"pruning": {"methods": ["none"]}}))
    result = CliRunner().invoke(cli, ["run", str(config), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "finetune.lora.target_modules" in result.output
    assert not (tmp_path / "run").exists()
