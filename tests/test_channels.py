"""Channel pruning of convolutional image classifiers (``space.pruning.methods: [channels]``):
each stage keeps the fraction its recipe says, the pruned model exports to ONNX and computes what
it did in torch, its checkpoint loads again, a study searches it, and a model it cannot prune is
refused before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import optuna
import pytest
import torch
import torch_pruning as tp
from click.testing import CliRunner
from torch import nn

import edgetune
from edgetune.objectives.architectures import SHAPES_FILE, write_shapes
from edgetune.objectives.channels import prune_channels
from edgetune.objectives.checkpoint import load_classifier, save_classifier
from edgetune.objectives.data import DataConfig, load_dataset
from edgetune.objectives.export import export_onnx
from edgetune.objectives.task import Task, TaskConfig, load_task
from edgetune.search.cli import cli
from edgetune.spaces.channels import STAGES, ChannelPruning, ChannelsSpace
from edgetune.spaces.pruning import NoPruning

from helpers import run_study, tiny_config, write_config
from vision import SIDE, build_tiny_vision_model, vision_config, write_image_folder

CNNS = ("resnet", "mobilenet_v2", "convnext", "efficientnet")
STUDY = "tiny-vision"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("images") / "data", per_label=12)


def task_of(model: Path, images: Path) -> Task:
    return load_task(TaskConfig(model=str(model), data=DataConfig(path=str(images))))


def pixels(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(0))


def widths(model: nn.Module) -> dict[str, int]:
    return {name: module.out_channels if isinstance(module, nn.Conv2d) else module.out_features
            for name, module in model.named_modules() if isinstance(module, nn.Conv2d | nn.Linear)}


@pytest.mark.parametrize("family", CNNS)
def test_half_the_channels_of_every_stage_go_and_the_model_still_classifies(
        images: Path, tmp_path: Path, family: str) -> None:
    """Every convolution and linear layer keeps half its outputs (a depthwise convolution follows
    the layer feeding it); the classifier keeps one output per label; multiply-accumulates and
    weights fall to about a quarter to a half."""
    folder = build_tiny_vision_model(tmp_path / "model", family)
    model = load_classifier(folder)
    before, example = widths(model), pixels(1)
    macs, weights = tp.utils.count_ops_and_params(model, example)
    prune_channels(model, ChannelPruning(kept=(0.5,) * STAGES), task_of(folder, images))
    after = widths(model)
    classifier = next(reversed(before))
    assert after[classifier] == before[classifier]
    for name in before.keys() - {classifier}:
        assert after[name] in {before[name] // 2, (before[name] + 1) // 2}, name
    pruned_macs, pruned_weights = tp.utils.count_ops_and_params(model, example)
    assert pruned_macs < 0.55 * macs and pruned_weights < 0.55 * weights
    assert model(pixel_values=pixels()).logits.shape == (2, before[classifier])


def test_each_stage_keeps_its_own_fraction(images: Path, tmp_path: Path) -> None:
    """A stage is the layers between two downsamplings: on a tiny ResNet, the stem and the first
    stage (stage 0), then the second stage (stage 1). A bottleneck's first 1x1 convolution runs
    before its block downsamples, so it is counted in the stage before."""
    folder = build_tiny_vision_model(tmp_path / "model", "resnet")
    model = load_classifier(folder)
    prune_channels(model, ChannelPruning(kept=(1.0, 0.5, 1.0, 1.0)), task_of(folder, images))
    stage = "resnet.encoder.stages.{}.layers.0.{}.convolution"
    assert widths(model) == {
        "resnet.embedder.embedder.convolution": 8,
        stage.format(0, "layer.0"): 2, stage.format(0, "layer.1"): 2,
        stage.format(0, "layer.2"): 8,
        stage.format(1, "layer.0"): 4,  # runs at stage 0's resolution
        stage.format(1, "layer.1"): 2, stage.format(1, "layer.2"): 8,
        stage.format(1, "shortcut"): 8,
        "classifier.1": 2,
    }


@pytest.mark.parametrize("family", CNNS)
def test_a_pruned_checkpoint_loads_again_and_exports_what_it_computes(
        images: Path, tmp_path: Path, family: str) -> None:
    """Saved as a Hugging Face folder with its channels in ``edgetune-shapes.json`` (no pickle),
    it loads with identical logits, and its ONNX export computes them with smaller convolutions."""
    folder = build_tiny_vision_model(tmp_path / "model", family)
    model = prune_channels(load_classifier(folder), ChannelPruning(kept=(0.75, 0.5, 0.5, 0.5)),
                           task_of(folder, images))
    saved = tmp_path / "pruned"
    save_classifier(model, saved)
    write_shapes(model, saved)
    assert (saved / SHAPES_FILE).exists() and not list(saved.glob("*.bin"))
    loaded = load_classifier(saved)
    with torch.no_grad():
        expected = model.eval()(pixel_values=pixels()).logits
        assert torch.equal(loaded(pixel_values=pixels()).logits, expected)
    exported = export_onnx(loaded, ["pixel_values"], tmp_path / "model.onnx", image_size=SIDE)
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"pixel_values": pixels().numpy()})[0]
    np.testing.assert_allclose(logits, expected.numpy(), atol=1e-4)
    unpruned = export_onnx(load_classifier(folder), ["pixel_values"], tmp_path / "full.onnx",
                           image_size=SIDE)
    assert conv_weights(exported) < 0.75 * conv_weights(unpruned)


def test_taylor_importance_keeps_other_channels_than_magnitude(images: Path,
                                                              tmp_path: Path) -> None:
    """Taylor importance ranks channels by |weight x gradient| of the loss on train images:
    the same widths, other channels kept, and a recipe that says so."""
    folder = build_tiny_vision_model(tmp_path / "model", "mobilenet_v2")
    task = task_of(folder, images)
    kept = {importance: prune_channels(load_classifier(folder, task.label_names), ChannelPruning(
        kept=(0.5,) * STAGES, importance=importance), task)
        for importance in ("magnitude", "taylor")}
    assert widths(kept["magnitude"]) == widths(kept["taylor"])
    weights = {importance: model.state_dict() for importance, model in kept.items()}
    assert any(not torch.equal(weights["magnitude"][name], weights["taylor"][name])
               for name in weights["magnitude"])
    assert all(p.grad is None for p in kept["taylor"].parameters())
    assert ChannelPruning(kept=(0.5,) * STAGES, importance="taylor").short().endswith("-taylor")


def conv_weights(path: Path) -> int:
    graph = onnx.load(str(path)).graph
    sizes = {init.name: int(np.prod(init.dims)) for init in graph.initializer}
    return sum(sizes.get(node.input[1], 0) for node in graph.node if node.op_type == "Conv")


def test_each_stage_s_fraction_is_sampled_and_keeping_all_is_no_pruning() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    recipes = []
    for _ in range(30):
        trial = study.ask()
        recipes.append(ChannelsSpace().sample(trial))
        stages = {f"pruning.channels.stage{i}" for i in range(STAGES)}
        assert set(trial.params) - {"pruning.channels.importance"} == stages
    pruned = [r for r in recipes if isinstance(r, ChannelPruning)]
    assert {k for r in pruned for k in r.kept} == {0.5, 0.75, 1.0}
    assert {r.importance for r in pruned} == {"magnitude"}  # taylor only where a config says
    assert pruned[0].short() == "ch" + "/".join(f"{k:.2f}" for k in pruned[0].kept)
    kept_all = optuna.trial.FixedTrial({f"pruning.channels.stage{i}": 1.0 for i in range(STAGES)})
    assert ChannelsSpace().sample(kept_all) == NoPruning()


CHANNELS_TRIAL = {"pruning.method": "channels", "graph.fusion": False, "recovery.steps": 20,
                  "recovery.learning_rate": 1e-3, "recovery.distillation": True,
                  "recovery.temperature": 2.0, "recovery.alpha": 0.5,
                  "pruning.channels.importance": "magnitude",
                  **{f"pruning.channels.stage{i}": 0.75 for i in range(STAGES)},
                  "quantization.scheme": "static",
                  **{f"quantization.static.{name}": value for name, value in {
                      "format": "qdq", "calibration": "minmax", "activation_type": "uint8",
                      "per_channel": True, "op_types": "all", "keep_fp32": "none"}.items()}}


def test_a_cnn_study_searches_channel_pruning_and_exports_its_trial(
        images: Path, tmp_path: Path) -> None:
    """The reference, then channel pruning with a distilled recovery and static INT8: measured,
    within reach of the reference's accuracy, exported from its cached checkpoint, and the export
    labels images as measured."""
    model = build_tiny_vision_model(tmp_path / "model", "resnet")
    config = vision_config(model, images, task={"kind": "image"}, search={
        "trials": 2, "enqueue": [CHANNELS_TRIAL]})
    config["space"]["quantization"]["schemes"] = ["none", "static"]  # no dynamic baseline
    config["space"] |= {"pruning": {"methods": ["none", "channels"]},
                        "recovery": {"steps": {"low": 20, "high": 20},
                                     "learning_rate": {"low": 1e-3, "high": 1e-3}}}
    run_dir = run_study(tmp_path, config, trials=2)
    storage = f"sqlite:///{run_dir / 'study.db'}"
    done = [t for t in optuna.load_study(study_name=STUDY, storage=storage).get_trials()
            if t.state == optuna.trial.TrialState.COMPLETE]
    recipes = [t.user_attrs["recipe_short"] for t in done]
    assert recipes[0] == "fp32 reference", recipes
    assert recipes[1].startswith("ch0.75/0.75/0.75/0.75+rec20") and "static" in recipes[1]
    reference, pruned = done
    assert pruned.values[0] >= reference.values[0] - 0.2 and pruned.values[1] > 0
    out = tmp_path / "export"
    result = CliRunner().invoke(cli, ["export", "--run-dir", str(run_dir), "--study", STUDY,
                                      "--trial", str(pruned.number), "--out", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    validation = load_dataset(DataConfig(path=str(images))).splits["validation"]
    labels = json.loads((out / "labels.json").read_text())
    predicted = edgetune.load(out)([str(path) for path in validation.images])
    correct = np.mean([labels.index(p["label"]) == label
                       for p, label in zip(predicted, validation.labels.tolist())])
    metrics = json.loads((out / "metrics.json").read_text())
    assert correct == pytest.approx(metrics["remeasured"]["validation_accuracy"])


@pytest.mark.parametrize("family", ["vit", "text"])
def test_channel_pruning_of_a_model_without_convolution_stages_is_refused_in_one_line(
        images: Path, tmp_path: Path, tiny_model: Path, tiny_csv: Path, family: str) -> None:
    if family == "vit":
        config = vision_config(build_tiny_vision_model(tmp_path / "model", "vit"), images)
        config["space"]["pruning"] = {"methods": ["none", "channels"]}
    else:
        config = tiny_config(tiny_model, tiny_csv, space={"pruning": {"methods": ["channels"]}})
    result = CliRunner().invoke(cli, ["run", str(write_config(tmp_path, config)),
                                      "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert "space.pruning.methods" in result.output and "channel" in result.output
    assert not (tmp_path / "run").exists()
