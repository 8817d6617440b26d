"""Recovery fine-tuning wins back what pruning cost; distillation really learns from the teacher;
a pruned + recovered model is built once per recipe, whatever is done to it afterwards."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from edgetune.objectives import build as build_module
from edgetune.objectives import pruning as pruning_module
from edgetune.objectives.build import Candidate, Workbench
from edgetune.objectives.cache import Cache
from edgetune.objectives.candidate import build
from edgetune.objectives.checkpoint import load_classifier
from edgetune.objectives.pruning import make_permanent, prune
from edgetune.objectives.recovery import recover
from edgetune.objectives.task import Task
from edgetune.objectives.training import train_logits
from edgetune.spaces.graph import GraphRecipe
from edgetune.spaces.pruning import StructuredPruning, UnstructuredPruning
from edgetune.spaces.quantization import DynamicQuantization
from edgetune.spaces.recipe import Recipe
from edgetune.spaces.recovery import RecoveryRecipe


def predictions(model: torch.nn.Module, task: Task) -> np.ndarray:
    inputs = {k: torch.tensor(v) for k, v in task.encoded("validation").items()}
    with torch.no_grad():
        return model(**inputs).logits.argmax(dim=1).numpy()


def accuracy(model: torch.nn.Module, task: Task) -> float:
    return float((predictions(model, task) == task.labels("validation")).mean())


def heavily_pruned(bench: Workbench) -> torch.nn.Module:
    """The tiny base with 90% of its Linear weights zeroed: it guesses."""
    return prune(load_classifier(bench.base), UnstructuredPruning(ratio=0.9), bench.task)


@pytest.mark.parametrize(("precision", "computed_in"),
                         [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_recovery_wins_back_the_accuracy_pruning_cost(
        tiny_bench: Workbench, precision: str, computed_in: torch.dtype) -> None:
    task = tiny_bench.task
    assert accuracy(load_classifier(tiny_bench.base), task) > 0.95
    model = heavily_pruned(tiny_bench)
    assert accuracy(model, task) < 0.5
    trained_in: set[torch.dtype] = set()
    model.classifier.register_forward_hook(
        lambda module, args, out: trained_in.add(out.dtype) if module.training else None)

    recover(model, None, task,
            RecoveryRecipe(steps=20, learning_rate=3e-3, precision=precision), 16, seed=0)

    assert accuracy(model, task) > 0.9
    assert trained_in == {computed_in}
    assert all(p.dtype == torch.float32 for p in model.parameters())  # fp32 weights kept



@pytest.mark.parametrize(("recipe_batch", "trained_batch"), [(4, 4), (None, 16)])
def test_recovery_steps_take_the_recipes_batch_or_else_the_fine_tunings(
        tiny_bench: Workbench, monkeypatch: pytest.MonkeyPatch, recipe_batch: int | None,
        trained_batch: int) -> None:
    rows_seen: list[int] = []
    original_forward = type(load_classifier(tiny_bench.base)).forward

    def forward(self, input_ids, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.training:
            rows_seen.append(len(input_ids))
        return original_forward(self, input_ids, *args, **kwargs)

    model = heavily_pruned(tiny_bench)
    monkeypatch.setattr(type(model), "forward", forward)
    recover(model, None, tiny_bench.task,
            RecoveryRecipe(steps=3, learning_rate=3e-3, batch_size=recipe_batch), 16, seed=0)

    assert rows_seen == [trained_batch] * 3

def test_recovery_trains_at_the_recipes_dropout_and_leaves_the_models_own(
        tiny_bench: Workbench) -> None:
    model = heavily_pruned(tiny_bench)
    own = sorted({m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)})
    assert own and own != [0.0]
    seen: set[float] = set()

    def look(step: int, trained: torch.nn.Module) -> None:
        seen.update(m.p for m in trained.modules() if isinstance(m, torch.nn.Dropout))

    recover(model, None, tiny_bench.task, RecoveryRecipe(steps=4, learning_rate=3e-3), 16,
            seed=0, callback=look, callback_every=1)

    assert seen == {0.0}
    assert sorted({m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}) == own


def test_distillation_learns_the_teachers_answers_with_the_weight_given(
        tiny_bench: Workbench) -> None:
    """A confident teacher that answers the next label: with weight 1 the student copies it,
    with weight 0 it follows the labels."""
    task = tiny_bench.task
    teacher = load_classifier(tiny_bench.base)
    with torch.no_grad():
        teacher.classifier.weight.copy_(5 * teacher.classifier.weight.roll(1, dims=0))
        teacher.classifier.bias.copy_(5 * teacher.classifier.bias.roll(1))
    teacher_answers = predictions(teacher, task)
    assert (teacher_answers != task.labels("validation")).mean() > 0.95
    pruning = StructuredPruning(layers_dropped=2, layer_selection="even")

    def recovered(alpha: float) -> torch.nn.Module:
        student = prune(load_classifier(tiny_bench.base), pruning, task)
        recipe = RecoveryRecipe(steps=20, learning_rate=3e-3, distillation=True,
                                temperature=2.0, alpha=alpha)
        return recover(student, train_logits(teacher, task), task, recipe, 16, seed=0)

    assert (predictions(recovered(1.0), task) == teacher_answers).mean() > 0.9
    assert accuracy(recovered(0.0), task) > 0.9


def test_the_teachers_logits_are_its_answers_to_each_train_row(tiny_bench: Workbench) -> None:
    teacher = load_classifier(tiny_bench.base)
    rows = torch.tensor([0, 5, 3, 5])
    batch = {name: torch.tensor(array)[rows]
             for name, array in tiny_bench.task.encoded("train").items()}
    with torch.no_grad():
        direct = teacher(**batch).logits
    logits = train_logits(teacher, tiny_bench.task, batch_size=4)
    assert len(logits) == len(tiny_bench.task.labels("train"))
    torch.testing.assert_close(logits[rows], direct, atol=1e-5, rtol=1e-4)


def test_the_teachers_logits_are_computed_once_for_every_study_of_a_base(
        tiny_bench: Workbench, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bench = dataclasses.replace(tiny_bench, cache=Cache(tmp_path))
    calls = []
    real = build_module.train_logits
    monkeypatch.setattr(build_module, "train_logits",
                        lambda model, task: calls.append(1) or real(model, task))
    assert bench.teacher_logits() is bench.teacher_logits()
    later_study = dataclasses.replace(tiny_bench, cache=Cache(tmp_path))
    torch.testing.assert_close(later_study.teacher_logits(), bench.teacher_logits())
    assert len(calls) == 1


def counting_prune(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    calls: list[object] = []

    def prune_and_count(model: torch.nn.Module, recipe: object, task: Task) -> torch.nn.Module:
        calls.append(recipe)
        return prune(model, recipe, task)

    monkeypatch.setattr(pruning_module, "prune", prune_and_count)
    return calls


def test_quantization_variants_of_one_pruned_recipe_prune_and_recover_once(
        tiny_bench: Workbench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bench = dataclasses.replace(tiny_bench, cache=Cache(tmp_path / "cache"))
    calls = counting_prune(monkeypatch)
    pruning = StructuredPruning(layers_dropped=2, layer_selection="even")
    recovery = RecoveryRecipe(steps=5, learning_rate=3e-3)
    variants = [
        Recipe(pruning=pruning, recovery=recovery, quantization=DynamicQuantization()),
        Recipe(pruning=pruning, recovery=recovery, graph=GraphRecipe(fusion=True)),
    ]

    built = [build(recipe, bench, Candidate(path=tmp_path / str(i) / "model.onnx"))
             for i, recipe in enumerate(variants)]

    assert len(calls) == 1
    assert all(candidate.path.is_file() for candidate in built)
    other_recovery = Recipe(pruning=pruning, recovery=recovery.model_copy(update={"steps": 6}))
    build(other_recovery, bench, Candidate(path=tmp_path / "2" / "model.onnx"))
    assert len(calls) == 2  # a different recovery is a different model


def test_recovery_keeps_unstructured_zeros_from_regrowing(tiny_bench: Workbench) -> None:
    model = prune(load_classifier(tiny_bench.base), UnstructuredPruning(ratio=0.5),
                  tiny_bench.task)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    before = [copy.deepcopy(m.weight.detach()) for m in linears]

    recover(model, None, tiny_bench.task, RecoveryRecipe(steps=10, learning_rate=3e-3), 16, 0)

    make_permanent(model)
    for module, old in zip(linears, before):
        assert set(dict(module.named_parameters())) == {"weight", "bias"}  # plain Linear again
        zeros = old == 0
        assert zeros.float().mean() >= 0.5
        assert torch.all(module.weight[zeros] == 0)  # pruned weights stayed pruned
        assert not torch.equal(module.weight[~zeros], old[~zeros])  # the others trained
