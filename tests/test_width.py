"""Width pruning (``hidden_kept``): the residual stream narrowed across the whole model, its
channels ranked by activation on train rows; composed with the other structured cuts, saved,
reloaded, exported, fused and searched."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import optuna
import pytest
import torch
from click.testing import CliRunner

from edgetune.objectives.architectures import (
    ARCHITECTURES,
    CLASSIFIER_HEADS,
    layer_shapes,
    write_shapes,
)
from edgetune.objectives.checkpoint import load_classifier, save_classifier
from edgetune.objectives.data import DataConfig
from edgetune.objectives.export import export_onnx
from edgetune.objectives.graph import fuse
from edgetune.objectives.pruning import prune
from edgetune.objectives.task import Task, TaskConfig, load_task
from edgetune.search.baselines import HALF_THE_LAYERS, half_the_layers
from edgetune.search.cli import cli
from edgetune.search.config import StudyConfig, load_config
from edgetune.search.record import RECIPE_SHORT
from edgetune.spaces.pruning import NoPruning, StructuredPruning, StructuredSpace
from edgetune.spaces.recipe import Recipe

from conftest import build_tiny_model, tiny_family_task
from helpers import tiny_config, trials_of, write_config

FAMILIES = ["bert", "roberta", "distilbert"]
HIDDEN = 32  # the tiny models' hidden size: 4 heads of 8
EXAMPLE = Path(__file__).parents[1] / "examples" / "bbc-news.yaml"


@pytest.fixture(scope="module", params=FAMILIES)
def family(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           tiny_csv: Path) -> tuple[Path, Task]:
    """An untrained 3-layer tiny model of each family, with a task on the tiny data."""
    return tiny_family_task(tmp_path_factory.mktemp(request.param), request.param, 3,
                            tiny_csv)


def validation_batch(task: Task, rows: int = 8) -> dict[str, torch.Tensor]:
    return {name: torch.tensor(values[:rows])
            for name, values in task.encoded("validation").items()}


def stream_widths(model: torch.nn.Module) -> set[int]:
    """The width of every tensor that lives in the residual stream."""
    attribute, arch = ARCHITECTURES[model.config.model_type]
    head = CLASSIFIER_HEADS[model.config.model_type]
    widths = {m.embedding_dim for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    widths |= {m.normalized_shape[0] for m in model.modules() if isinstance(m, torch.nn.LayerNorm)}
    for layer in model.get_submodule(f"{attribute}.{arch.encoder}"):
        widths |= {layer.get_submodule(p).in_features
                   for p in (arch.query, arch.key, arch.value, arch.ffn_in)}
        widths |= {layer.get_submodule(p).out_features for p in (arch.attention_out, arch.ffn_out)}
    widths |= {model.get_submodule(p).in_features for p in head.reads}
    widths |= {model.get_submodule(p).out_features for p in head.writes}
    return widths


def test_width_pruning_narrows_the_residual_stream_everywhere_and_keeps_the_heads(
        family: tuple[Path, Task]) -> None:
    folder, task = family
    model = load_classifier(folder, task.label_names)
    heads_before = layer_shapes(model)

    pruned = prune(model, StructuredPruning(hidden_kept=0.6), task)

    kept = round(HIDDEN * 0.6)  # 19: no multiple of the 4 heads
    assert stream_widths(pruned) == {kept}
    _, arch = ARCHITECTURES[pruned.config.model_type]
    assert getattr(pruned.config, arch.hidden_attr) == kept
    assert layer_shapes(pruned) == heads_before  # 4 heads of 8, FFN 64, in every layer
    assert pruned(**validation_batch(task)).logits.shape == (8, len(task.label_names))


def test_a_width_pruned_model_reloads_from_its_folder_with_the_same_logits(
        family: tuple[Path, Task], tmp_path: Path) -> None:
    folder, task = family
    model = prune(load_classifier(folder, task.label_names), StructuredPruning(hidden_kept=0.6),
                  task)
    save_classifier(model, tmp_path / "narrow")
    write_shapes(model, tmp_path / "narrow")

    reloaded = load_classifier(tmp_path / "narrow")

    with torch.no_grad():
        inputs = validation_batch(task)
        assert torch.equal(model(**inputs).logits, reloaded(**inputs).logits)
    assert stream_widths(reloaded) == {19}


def test_the_channels_kept_are_those_with_the_largest_layernorm_activations(
        tiny_model: Path, tiny_csv: Path) -> None:
    task = load_task(TaskConfig(model=str(tiny_model), data=DataConfig(path=str(tiny_csv)),
                                max_length=32))
    model = load_classifier(tiny_model, task.label_names)
    loud = [1, 6, 9, 14, 19, 22, 27, 30]  # a quarter of the 32 channels, none of them first
    with torch.no_grad():
        for norm in (m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)):
            norm.weight[loud] *= 10
    words = model.bert.embeddings.word_embeddings.weight.detach().clone()
    pooler = model.bert.pooler.dense.weight.detach().clone()

    pruned = prune(model, StructuredPruning(hidden_kept=0.25), task)

    assert torch.equal(pruned.bert.embeddings.word_embeddings.weight, words[:, loud])
    assert torch.equal(pruned.bert.pooler.dense.weight, pooler[loud][:, loud])


def test_width_composes_with_layers_heads_and_ffn_and_its_export_still_fuses_attention(
        family: tuple[Path, Task], tmp_path: Path) -> None:
    folder, task = family
    recipe = StructuredPruning(heads_kept=0.5, ffn_kept=0.5, scope="global", layers_dropped=1,
                               layer_selection="importance", hidden_kept=0.5)
    model = prune(load_classifier(folder, task.label_names), recipe, task)
    save_classifier(model, tmp_path / "pruned")
    write_shapes(model, tmp_path / "pruned")
    reloaded = load_classifier(tmp_path / "pruned")
    shapes = layer_shapes(reloaded)["layers"]
    assert len(shapes) == 2 and sum(s["heads"] for s in shapes) == 4  # half of 2 layers x 4
    assert sum(s["ffn"] for s in shapes) == 64 and stream_widths(reloaded) == {16}
    feeds = {k: v[:16] for k, v in task.encoded("validation").items()}
    with torch.no_grad():  # before the export, which leaves the model in training mode
        torch_logits = reloaded(**{k: torch.tensor(v) for k, v in feeds.items()}).logits.numpy()
    plain = export_onnx(reloaded, list(feeds), tmp_path / "plain.onnx")

    fused_ops = fuse(plain, tmp_path / "fused.onnx", reloaded.config.model_type)

    assert fused_ops["Attention"] == 2
    attention = [node for node in onnx.load(str(tmp_path / "fused.onnx")).graph.node
                 if node.op_type == "Attention"]
    assert [next(a.i for a in n.attribute if a.name == "num_heads") for n in attention] == [
        s["heads"] for s in shapes]
    fused = ort.InferenceSession(str(tmp_path / "fused.onnx")).run(None, feeds)[0]
    np.testing.assert_allclose(fused, torch_logits, atol=1e-4)


def test_hidden_kept_is_sampled_only_where_a_config_opts_in() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    wide = StructuredSpace(hidden_kept={"low": 0.5, "high": 1.0, "step": 0.25})
    recipes = [wide.sample(study.ask()) for _ in range(40)]
    assert {r.hidden_kept for r in recipes if isinstance(r, StructuredPruning)} == {0.5, 0.75, 1.0}
    assert all(isinstance(r, NoPruning) == (r == NoPruning()) for r in recipes)

    default = study.ask()
    StructuredSpace().sample(default)
    assert "pruning.hidden_kept" not in default.params


def test_recipes_and_configs_without_width_pruning_store_what_they_stored_before() -> None:
    """Old studies resume (same fingerprint), find their repeats and cache entries (same recipe
    JSON); a width recipe says so in its short form."""
    assert load_config(EXAMPLE).fingerprint() == "bc53738a4f452499"
    assert "hidden_kept" not in StructuredPruning(heads_kept=0.5, scope="layer").model_dump()
    stored = {"method": "structured", "heads_kept": 1.0, "ffn_kept": 1.0, "scope": None,
              "layers_dropped": 1, "layer_selection": "even"}
    assert StructuredPruning.model_validate(stored).model_dump() == stored
    narrow = Recipe(pruning=StructuredPruning(layers_dropped=1, layer_selection="even",
                                              hidden_kept=0.5))
    assert Recipe.model_validate(narrow.model_dump(mode="json")) == narrow
    assert narrow.pruning.short() == "drop1L-even/hid0.50"


def test_a_study_samples_builds_and_measures_width_pruned_candidates(
        tmp_path: Path, tiny_model: Path, tiny_csv: Path) -> None:
    config = tiny_config(tiny_model, tiny_csv)
    config["space"]["pruning"] = {"methods": ["none", "structured"], "structured": {
        "layers_dropped": {"low": 0, "high": 1},
        "hidden_kept": {"low": 0.5, "high": 1.0, "step": 0.5}}}
    space = StudyConfig.model_validate(config).space
    narrow = {**half_the_layers(space, 2), "pruning.layers_dropped": 0, "pruning.hidden_kept": 0.5}
    del narrow["pruning.layer_selection"]
    config["search"] = {"trials": 5, "enqueue": [narrow]}
    path = write_config(tmp_path, config)

    result = CliRunner().invoke(cli, ["run", str(path), "--run-dir", str(tmp_path / "run"),
                                      "--no-report"], catch_exceptions=False)

    assert result.exit_code == 0, result.output
    trials = trials_of(f"sqlite:///{tmp_path / 'run' / 'study.db'}", "tiny")
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert HALF_THE_LAYERS in [t.user_attrs.get("baseline") for t in trials]
    [width] = [t for t in trials if t.params.get("pruning.hidden_kept") == 0.5]
    assert width.user_attrs[RECIPE_SHORT].startswith("hid0.50+")
    assert width.user_attrs["measurement"]["fused_ops"]["Attention"] == 2


def test_width_pruning_of_an_architecture_it_does_not_know_is_refused_before_any_work(
        tmp_path: Path, tiny_csv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(CLASSIFIER_HEADS, "distilbert")
    model = build_tiny_model(tmp_path / "distilbert", "distilbert")
    config = tiny_config(model, tiny_csv)
    config["space"]["pruning"]["structured"]["hidden_kept"] = {"low": 0.5, "high": 1.0}
    path = write_config(tmp_path, config)

    result = CliRunner().invoke(cli, ["run", str(path), "--run-dir", str(tmp_path / "run")])

    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert "space.pruning.structured.hidden_kept" in line and "'distilbert'" in line
    assert not (tmp_path / "run").exists()
    assert json.loads((model / "config.json").read_text())["dim"] == HIDDEN
