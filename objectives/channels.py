"""Channel pruning of convolutional image classifiers with Torch-Pruning's dependency graph, and
the shapes a channel-pruned checkpoint is loaded with again.

Torch-Pruning traces the model once and groups the layers whose channels are coupled (a
convolution's outputs, its BatchNorm, the inputs of the layers reading them, the other branch of
a residual sum, a depthwise convolution and the layer feeding it, a squeeze-excitation's gate);
removing a group's channels together keeps the model valid and makes its convolutions, and so
ONNX Runtime's kernels, really smaller. Groups are ranked within each layer by the L2 norm of the
weights their channels own (``GroupMagnitudeImportance``) or, where the recipe says, by Taylor
importance on train images (``GroupTaylorImportance``), and each gets the pruning ratio of its
stage (``edgetune.spaces.channels``); the classifier keeps its outputs, one per label.

A pruned checkpoint's weights no longer have the shapes its ``config.json`` gives:
``channel_shapes`` records the channels each group kept, ``edgetune-shapes.json`` holds them
beside the weights (``objectives.architectures.write_shapes``), and ``keep_channel_shapes`` cuts
a model built from the config to those shapes before its weights are read.

Recipe and space: ``edgetune.spaces.channels``; the knob: ``edgetune.objectives.pruning``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutputWithNoAttention

from edgetune.spaces.channels import STAGES, ChannelPruning, Importance

if TYPE_CHECKING:  # objectives.task loads checkpoints, which load channel-pruned ones with this
    from edgetune.objectives.task import Task

# The side of the image the dependency graph is traced on when no image size is known (saving
# and loading): any size the model runs on groups its layers the same way.
TRACE_SIDE = 224
IMPORTANCES: dict[Importance, Callable[[], tp.importance.Importance]] = {
    "magnitude": lambda: tp.importance.GroupMagnitudeImportance(p=2),
    "taylor": tp.importance.GroupTaylorImportance,
}
TAYLOR_ROWS = 32  # train images whose loss gradients rank channels by Taylor importance
TAYLOR_BATCH = 8  # of them in one backward pass


def prune_channels(model: PreTrainedModel, recipe: ChannelPruning,
                   task: Task) -> PreTrainedModel:
    """The pruning method's ``prune``: ``prune_stages`` at the task's image size, Taylor
    importance measured on ``TAYLOR_ROWS`` train images drawn at random (a split lists its
    images in the data's order, which an image folder sorts by label)."""
    assert task.image_size is not None
    rows = None
    if recipe.importance == "taylor":
        labels = task.labels("train")
        drawn = np.random.default_rng(0).permutation(len(labels))[:TAYLOR_ROWS]
        rows = (torch.from_numpy(task.encoded("train")["pixel_values"][drawn]),
                torch.from_numpy(labels[drawn]).long())
    return prune_stages(model, recipe, task.image_size, rows)


def prune_stages(model: PreTrainedModel, recipe: ChannelPruning, side: int,
                 rows: tuple[torch.Tensor, torch.Tensor] | None = None) -> PreTrainedModel:
    """Remove, in place, the output channels ``recipe`` does not keep in each stage (and the
    inputs that read them), tracing the model on ``side`` x ``side`` images; return ``model``.

    ``rows`` (images and their labels) are what Taylor importance takes the loss's gradients on.
    """
    example = _example(model, side)
    with _evaluating(model):
        layers = _layers_by_stage(model, example)
        classifier = next(reversed(layers))  # the head, which keeps one output per label
        assert getattr(classifier, "out_features", None) == model.config.num_labels, classifier
        pruner = tp.pruner.BasePruner(
            model, example,
            importance=IMPORTANCES[recipe.importance](),
            pruning_ratio=0.0,
            pruning_ratio_dict={layer: 1 - recipe.kept[min(stage, STAGES - 1)]
                                for layer, stage in layers.items() if layer is not classifier},
            ignored_layers=[classifier],
            output_transform=_logits,
        )
        if recipe.importance == "taylor":
            assert rows is not None, "Taylor importance needs train rows"
            _loss_gradients(model, *rows)
    pruner.step()
    model.zero_grad(set_to_none=True)
    return model


def _loss_gradients(model: PreTrainedModel, images: torch.Tensor, labels: torch.Tensor) -> None:
    """Accumulate in the weights' ``.grad`` the gradient of the mean loss over ``images``, a few
    at a time (a backward pass holds every activation)."""
    model.zero_grad(set_to_none=True)
    for start in range(0, len(images), TAYLOR_BATCH):
        batch = slice(start, start + TAYLOR_BATCH)
        logits = model(pixel_values=images[batch]).logits
        loss = F.cross_entropy(logits, labels[batch], reduction="sum") / len(images)
        loss.backward()


def channel_shapes(model: PreTrainedModel) -> dict[str, int]:
    """The channels of each coupled group, by the name of the layer Torch-Pruning roots it at."""
    graph = _graph(model)
    names = {module: name for name, module in model.named_modules()}
    return {names[root]: graph.get_out_channels(root) for root in _roots(graph)}


def keep_channel_shapes(model: PreTrainedModel, channels: dict[str, int]) -> None:
    """Cut ``model`` (built from its config) in place to the ``channels`` of ``channel_shapes``,
    keeping each group's first channels: the weights read after replace them all."""
    graph = _graph(model)
    names = {module: name for name, module in model.named_modules()}
    history = []  # as Torch-Pruning records a pruned group: [root, its outputs?, indices removed]
    for root in _roots(graph):
        now = graph.get_out_channels(root)
        if channels[names[root]] < now:
            history.append([names[root], True, list(range(channels[names[root]], now))])
    graph.load_pruning_history(history)


def _roots(graph: tp.DependencyGraph) -> Iterator[nn.Module]:
    for group in graph.get_all_groups():
        yield group[0].dep.target.module


def _layers_by_stage(model: PreTrainedModel, example: torch.Tensor) -> dict[nn.Module, int]:
    """Every convolution and linear layer, in the order a forward pass runs them, with its stage:
    the number of downsamplings before it, the stem's excepted.

    A downsampling is a strided convolution whose output is smaller than the feature maps so far.
    A residual block's strided shortcut, which runs beside the main branch's, adds none; nor
    does a squeeze-excitation, which is not strided though it works on pooled 1x1 maps.
    """
    order: dict[nn.Module, int | None] = {}

    def record(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        strided = isinstance(module, nn.Conv2d) and max(module.stride) > 1
        order.setdefault(module, output.shape[-2] * output.shape[-1] if strided else None)

    hooks = [module.register_forward_hook(record) for module in model.modules()
             if isinstance(module, nn.Conv2d | nn.Linear)]
    try:
        with torch.no_grad():
            model(pixel_values=example)
    finally:
        for hook in hooks:
            hook.remove()
    stages, stage, smallest = {}, -1, None
    for module, area in order.items():
        if area is not None and (smallest is None or area < smallest):
            stage, smallest = stage + 1, area
        stages[module] = max(stage, 0)
    return stages


def _graph(model: PreTrainedModel) -> tp.DependencyGraph:
    side = getattr(model.config, "image_size", None) or TRACE_SIDE
    with _evaluating(model):
        return tp.DependencyGraph().build_dependency(model, example_inputs=_example(model, side),
                                                     output_transform=_logits)


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """Tracing runs the model: in eval mode, so that BatchNorm takes a batch of one and keeps
    its running statistics."""
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


def _example(model: PreTrainedModel, side: int) -> torch.Tensor:
    """A batch of one blank image: Torch-Pruning only traces it, and magnitude ranks weights."""
    return torch.zeros(1, getattr(model.config, "num_channels", 3), side, side)


def _logits(output: ImageClassifierOutputWithNoAttention) -> torch.Tensor:
    return output.logits
