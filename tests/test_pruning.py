"""Structured pruning removes the heads, neurons and layers it says (BERT, RoBERTa, DistilBERT).

Pruned models save and reload exactly, export to ONNX with smaller MatMuls, and ONNX Runtime's
attention fusion handles layers that keep different numbers of heads.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from edgetune.errors import InputError
from edgetune.objectives.architectures import ARCHITECTURES, layer_shapes, write_shapes
from edgetune.objectives.build import Workbench
from edgetune.objectives.checkpoint import load_classifier, save_classifier
from edgetune.objectives.export import export_onnx
from edgetune.objectives.graph import fuse
from edgetune.objectives.pruning import IMPORTANCE_ROWS, check_space, prune
from edgetune.objectives.task import Task
from edgetune.search.cli import cli
from edgetune.spaces.pruning import PruningSpace, StructuredPruning

from conftest import build_tiny_model, tiny_family_task
from helpers import tiny_config, write_config

FAMILIES = ["bert", "roberta", "distilbert"]
HEAD_SIZE = 8  # hidden 32 / 4 heads in the tiny models


@pytest.fixture(scope="module", params=FAMILIES)
def family(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           tiny_csv: Path) -> tuple[Path, Task]:
    """An untrained 4-layer tiny model of each family, with a task on the tiny data."""
    return tiny_family_task(tmp_path_factory.mktemp(request.param), request.param, 4,
                            tiny_csv)


def parts(model: torch.nn.Module) -> tuple[list[torch.nn.Module], object]:
    attribute, arch = ARCHITECTURES[model.config.model_type]
    return list(model.get_submodule(f"{attribute}.{arch.encoder}")), arch


def scale_heads(layer: torch.nn.Module, arch: object, heads: list[int], factor: float) -> None:
    rows = [h * HEAD_SIZE + i for h in heads for i in range(HEAD_SIZE)]
    with torch.no_grad():
        for name in (arch.query, arch.key, arch.value):
            layer.get_submodule(name).weight[rows] *= factor


def kept_source_layers(pruned: torch.nn.Module, original: torch.nn.Module) -> list[int]:
    """Which of the original layers survive, recognised by their FFN output weights."""
    (pruned_layers, arch), (original_layers, _) = parts(pruned), parts(original)
    return [
        next(i for i, source in enumerate(original_layers)
             if torch.equal(layer.get_submodule(arch.ffn_out).weight,
                            source.get_submodule(arch.ffn_out).weight))
        for layer in pruned_layers
    ]


def test_layer_scope_keeps_the_largest_heads_and_neurons_in_every_layer(
        family: tuple[Path, Task]) -> None:
    folder, task = family
    model = load_classifier(folder, task.label_names)
    layers, arch = parts(model)
    for layer in layers:  # heads 1 and 3, and neurons 10-25, made the largest
        scale_heads(layer, arch, [1, 3], 10.0)
        with torch.no_grad():
            layer.get_submodule(arch.ffn_in).weight[10:26] *= 10.0
    original = copy.deepcopy(model)

    prune(model, StructuredPruning(heads_kept=0.5, ffn_kept=0.25, scope="layer"), task)

    assert layer_shapes(model)["layers"] == [{"heads": 2, "head_size": 8, "ffn": 16}] * 4
    heads_rows = [h * HEAD_SIZE + i for h in (1, 3) for i in range(HEAD_SIZE)]
    for layer, source in zip(parts(model)[0], parts(original)[0]):
        for name in (arch.query, arch.key, arch.value):
            assert torch.equal(layer.get_submodule(name).weight,
                               source.get_submodule(name).weight[heads_rows])
        assert torch.equal(layer.get_submodule(arch.attention_out).weight,
                           source.get_submodule(arch.attention_out).weight[:, heads_rows])
        assert torch.equal(layer.get_submodule(arch.ffn_in).weight,
                           source.get_submodule(arch.ffn_in).weight[10:26])
        assert torch.equal(layer.get_submodule(arch.ffn_out).weight,
                           source.get_submodule(arch.ffn_out).weight[:, 10:26])


def uneven_heads_model(folder: Path, task: Task) -> torch.nn.Module:
    """A model whose first layer has one strong head and three nearly silent ones."""
    model = load_classifier(folder, task.label_names)
    layers, arch = parts(model)
    scale_heads(layers[0], arch, [1, 2, 3], 0.01)
    return model


def test_global_scope_ranks_heads_across_layers(family: tuple[Path, Task]) -> None:
    folder, task = family
    model = prune(uneven_heads_model(folder, task),
                  StructuredPruning(heads_kept=0.5, ffn_kept=0.25, scope="global"), task)
    shapes = layer_shapes(model)["layers"]
    heads = [shape["heads"] for shape in shapes]
    assert heads[0] == 1  # the silent heads went first
    assert sum(heads) == 8  # half of 4 layers x 4 heads
    assert sum(shape["ffn"] for shape in shapes) == 64  # a quarter of 4 x 64 neurons
    assert all(shape["ffn"] >= 1 for shape in shapes)


def test_global_scope_never_empties_a_layer(family: tuple[Path, Task]) -> None:
    folder, task = family
    model = prune(uneven_heads_model(folder, task),
                  StructuredPruning(heads_kept=0.1, ffn_kept=0.01, scope="global"), task)
    assert layer_shapes(model)["layers"] == [{"heads": 1, "head_size": 8, "ffn": 1}] * 4


def test_even_selection_keeps_evenly_spaced_layers(family: tuple[Path, Task]) -> None:
    folder, task = family
    original = load_classifier(folder, task.label_names)
    one = prune(copy.deepcopy(original),
                StructuredPruning(layers_dropped=1, layer_selection="even"), task)
    three = prune(copy.deepcopy(original),
                  StructuredPruning(layers_dropped=3, layer_selection="even"), task)
    assert kept_source_layers(one, original) == [0, 2, 3]
    assert kept_source_layers(three, original) == [0]
    assert len(layer_shapes(three)["layers"]) == 1


def train_loss(model: torch.nn.Module, task: Task) -> float:
    inputs = {k: torch.tensor(v[:IMPORTANCE_ROWS]) for k, v in task.encoded("train").items()}
    labels = torch.tensor(task.labels("train")[:IMPORTANCE_ROWS])
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(model(**inputs).logits, labels).item()


def test_importance_selection_drops_the_layer_the_loss_misses_least(
        tiny_bench: Workbench) -> None:
    task = tiny_bench.task
    original = load_classifier(tiny_bench.base)
    loss_without = {}
    for skipped in range(4):
        model = copy.deepcopy(original)
        model.bert.encoder.layer = torch.nn.ModuleList(
            layer for i, layer in enumerate(model.bert.encoder.layer) if i != skipped)
        loss_without[skipped] = train_loss(model, task)
    least_missed = min(loss_without, key=loss_without.__getitem__)

    pruned = prune(copy.deepcopy(original),
                   StructuredPruning(layers_dropped=1, layer_selection="importance"), task)

    assert kept_source_layers(pruned, original) == [i for i in range(4) if i != least_missed]
    assert pruned.config.num_hidden_layers == 3


def matmul_weight_shapes(path: Path) -> list[tuple[int, ...]]:
    model = onnx.load(str(path))
    weights = {w.name: tuple(w.dims) for w in model.graph.initializer}
    return sorted(weights[n.input[1]] for n in model.graph.node
                  if n.op_type == "MatMul" and n.input[1] in weights)


def test_pruned_models_reload_exactly_and_export_smaller_matmuls(
        family: tuple[Path, Task], tmp_path: Path) -> None:
    folder, task = family
    recipe = StructuredPruning(heads_kept=0.5, ffn_kept=0.5, scope="global", layers_dropped=1,
                               layer_selection="importance")
    model = prune(uneven_heads_model(folder, task), recipe, task)
    save_classifier(model, tmp_path / "pruned")
    write_shapes(model, tmp_path / "pruned")

    reloaded = load_classifier(tmp_path / "pruned")

    inputs = {k: torch.tensor(v[:8]) for k, v in task.encoded("validation").items()}
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, reloaded(**inputs).logits)
    shapes = layer_shapes(reloaded)["layers"]
    assert shapes == layer_shapes(model)["layers"] and len(shapes) == 3
    names = list(task.encoded("validation"))
    unpruned = load_classifier(folder, task.label_names)
    full = matmul_weight_shapes(export_onnx(unpruned, names, tmp_path / "full.onnx"))
    small = matmul_weight_shapes(export_onnx(reloaded, names, tmp_path / "small.onnx"))
    expected_encoder = sorted(
        shape for layer in shapes for width in [layer["heads"] * HEAD_SIZE]
        for shape in [(32, width)] * 3 + [(width, 32), (32, layer["ffn"]), (layer["ffn"], 32)])
    assert [s for s in small if s not in full] == [s for s in expected_encoder if s not in full]
    assert len(small) == len(full) - 6  # one layer's six MatMuls are gone
    assert sum(np.prod(s) for s in small) < 0.6 * sum(np.prod(s) for s in full)


def test_attention_fusion_follows_each_layers_own_head_count(
        family: tuple[Path, Task], tmp_path: Path) -> None:
    folder, task = family
    model = prune(uneven_heads_model(folder, task),
                  StructuredPruning(heads_kept=0.5, ffn_kept=0.5, scope="global"), task)
    heads = [shape["heads"] for shape in layer_shapes(model)["layers"]]
    assert len(set(heads)) > 1, "the test needs layers with different head counts"
    names = list(task.encoded("validation"))
    plain = export_onnx(model, names, tmp_path / "plain.onnx")

    fused_ops = fuse(plain, tmp_path / "fused.onnx", model.config.model_type)

    assert fused_ops["Attention"] == 4
    graph = onnx.load(str(tmp_path / "fused.onnx")).graph
    attention_heads = [next(a.i for a in node.attribute if a.name == "num_heads")
                       for node in graph.node if node.op_type == "Attention"]
    assert attention_heads == heads
    feeds = {k: v[:16] for k, v in task.encoded("validation").items()}
    unfused = ort.InferenceSession(str(plain)).run(None, feeds)[0]
    fused = ort.InferenceSession(str(tmp_path / "fused.onnx")).run(None, feeds)[0]
    np.testing.assert_allclose(fused, unfused, atol=1e-4)


def gpt2_folder(folder: Path) -> Path:
    from transformers import BertTokenizer, GPT2Config, GPT2ForSequenceClassification

    bert = build_tiny_model(folder)  # for its tokenizer files
    for file in bert.glob("*.safetensors"):
        file.unlink()
    GPT2ForSequenceClassification(GPT2Config(vocab_size=60, n_embd=32, n_layer=2, n_head=4,
                                             n_positions=64)).save_pretrained(folder)
    assert BertTokenizer.from_pretrained(folder)
    return folder


def test_unsupported_architectures_and_impossible_drops_are_refused(tmp_path: Path,
                                                                   tiny_model: Path) -> None:
    gpt2 = json.loads((gpt2_folder(tmp_path / "gpt2") / "config.json").read_text())
    with pytest.raises(InputError) as error:
        check_space(gpt2, PruningSpace())
    assert error.value.where == "space.pruning.methods" and "'gpt2'" in error.value.message
    check_space(gpt2, PruningSpace(methods=["none", "unstructured"]))
    with pytest.raises(InputError) as error:  # the default space drops up to 4 of its 2 layers
        check_space(json.loads((tiny_model / "config.json").read_text()), PruningSpace())
    assert error.value.where == "space.pruning.structured.layers_dropped.high"
    assert "at most 1" in error.value.message


@pytest.mark.parametrize(("model", "space", "field"), [
    ("gpt2", {}, "space.pruning.methods"),
    ("bert", {"structured": {"layers_dropped": {"low": 0, "high": 2}}},
     "space.pruning.structured.layers_dropped.high"),
])
def test_run_refuses_a_pruning_space_the_model_cannot_take_before_any_work(
        tmp_path: Path, tiny_model: Path, tiny_csv: Path, model: str, space: dict,
        field: str) -> None:
    folder = gpt2_folder(tmp_path / "gpt2") if model == "gpt2" else tiny_model
    config = write_config(tmp_path, tiny_config(folder, tiny_csv, space={"pruning": space}))
    result = CliRunner().invoke(cli, ["run", str(config), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert field in result.output
    assert not (tmp_path / "run").exists()
