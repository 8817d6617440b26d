"""Pruning knobs and their build step: remove heads, FFN neurons, layers and hidden channels, or
zero the smallest weights, then recover the pruned model by fine-tuning (``objectives.recovery``).

Structured pruning shrinks the ``nn.Linear`` layers themselves with
``transformers.pytorch_utils.prune_linear_layer`` (transformers 5 removed ``prune_heads``), so the
exported ONNX graph has smaller MatMuls. A head's importance is the L2 norm of the weights it owns
(its rows of Q, K and V and its columns of the attention output); a neuron's, the L2 norm of its
row of the first FFN layer. Hidden channels go last, ranked by activation
(``objectives.width``). Where each architecture keeps those parts, and how a pruned model is
saved and loaded again: ``objectives.architectures``.

``channels`` removes convolution channels of a CNN with Torch-Pruning (``objectives.channels``).

Search space: ``edgetune.spaces.pruning`` (``edgetune.spaces.channels``). The knobs (``NONE``,
``STRUCTURED``, ``UNSTRUCTURED``, ``CHANNELS``) are registered as ``edgetune.knobs`` entry
points.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune as torch_prune
from transformers import PreTrainedModel

from edgetune.errors import InputError
from edgetune.objectives.architectures import (
    ARCHITECTURES,
    CLASSIFIER_HEADS,
    Architecture,
    encoder_layer_list,
    encoder_layers,
    keep_heads,
    keep_neurons,
    set_encoder_layers,
    size_of_heads,
    write_shapes,
)
from edgetune.objectives.build import Build, Workbench
from edgetune.objectives.channels import prune_channels
from edgetune.objectives.checkpoint import save_classifier
from edgetune.objectives.recovery import recover
from edgetune.objectives.task import Task
from edgetune.objectives.width import keep_width
from edgetune.spaces.channels import CHANNEL_PRUNABLE, ChannelPruning, ChannelsSpace
from edgetune.spaces.knob import Phases, PruningMethod
from edgetune.spaces.pruning import (
    NoPruning,
    PruningRecipe,
    PruningSpace,
    Scope,
    StructuredPruning,
    StructuredSpace,
    UnstructuredPruning,
    UnstructuredSpace,
)
from edgetune.spaces.recipe import Recipe
from edgetune.spaces.registry import knob_of

# Rows of the train split on which dropping a layer (and a hidden channel's activation) is
# measured: enough for a stable mean loss, few enough that measuring every candidate layer costs
# seconds next to recovery's minutes.
IMPORTANCE_ROWS = 64


def check_space(model_config: dict[str, object], space: PruningSpace) -> None:
    """Refuse, before any work starts, a pruning space this model (its ``config.json``) cannot take.

    Raises:
        InputError: structured pruning of an architecture it does not know, as many layers
            to drop as the model has, width pruning of an architecture it does not know, or
            channel pruning of a model that is not a convolutional classifier it knows.
    """
    model_type = model_config.get("model_type")
    if "channels" in space.methods and model_type not in CHANNEL_PRUNABLE:
        raise InputError(
            "space.pruning.methods",
            f"channel pruning supports the convolutional image classifiers "
            f"{', '.join(sorted(CHANNEL_PRUNABLE))}, not {model_type!r}; remove 'channels' "
            "from the methods",
        )
    if "structured" not in space.methods:
        return
    if model_type not in ARCHITECTURES:
        raise InputError(
            "space.pruning.methods",
            f"structured pruning supports {', '.join(sorted(ARCHITECTURES))}, not {model_type!r}; "
            "remove 'structured' from the methods",
        )
    layers = encoder_layers(model_config)
    high = space.structured.layers_dropped.high
    if isinstance(layers, int) and high >= layers:
        raise InputError(
            "space.pruning.structured.layers_dropped.high",
            f"the model has {layers} encoder layers, so at most {layers - 1} can be dropped "
            f"(high is {high})",
        )
    if space.structured.searches_width and model_type not in CLASSIFIER_HEADS:
        raise InputError(
            "space.pruning.structured.hidden_kept",
            f"width pruning supports {', '.join(sorted(CLASSIFIER_HEADS))}, not {model_type!r}; "
            "leave hidden_kept out",
        )


def prune(model: PreTrainedModel, recipe: PruningRecipe, task: Task) -> PreTrainedModel:
    """Apply ``recipe`` to ``model`` in place, as its method does, and return it.

    ``task`` provides the train rows on which layer importance is measured. Unstructured pruning
    leaves ``torch.nn.utils.prune`` masks in place so that recovery training cannot regrow the
    zeroed weights; ``make_permanent`` removes them before saving.
    """
    method = knob_of(recipe, "pruning")
    assert isinstance(method, PruningMethod)
    return method.prune(model, recipe, task)


def pruned_and_recovered(build: Build) -> None:
    """The build step of every method that recovers: the base pruned by the recipe's method,
    then recovered (distilled from the base where the recipe says), cached by recipe and seed."""
    recipe, bench = build.recipe, build.bench

    def build_pruned(folder: Path) -> None:
        model = prune(bench.load(bench.base), recipe.pruning, bench.task)
        teacher = bench.teacher_logits() if recipe.recovery.distillation else None
        recover(model, teacher, bench.task, recipe.recovery, bench.batch_size, bench.seed,
                build.callback, build.callback_every)
        pruned = make_permanent(model)
        save_classifier(pruned, folder)
        write_shapes(pruned, folder)

    build.checkpoint = bench.cache.get_or_build("pruned", _pruned_key(recipe, bench),
                                                build_pruned)


def recovery_phases(recipe: Recipe, bench: Workbench) -> Phases:
    """The recovery a build will train, unless the cache holds its result already (another worker
    may finish the same entry meanwhile: then a listed recovery does not run)."""
    if not recipe.recovery.steps or bench.cache.path("pruned", _pruned_key(recipe, bench)).is_dir():
        return []
    return [("recovery", recipe.recovery.steps)]


def _pruned_key(recipe: Recipe, bench: Workbench) -> dict[str, object]:
    return {
        "stage": "prune_recover",
        "base": bench.base.name,
        "pruning": recipe.pruning.model_dump(),
        "recovery": recipe.recovery.model_dump(),
        "batch_size": bench.batch_size,
        "seed": bench.seed,
    }


def _prune_structured(model: PreTrainedModel, recipe: StructuredPruning,
                      task: Task) -> PreTrainedModel:
    """Layers, then heads and FFN neurons, then hidden channels: each ranked on what is left."""
    _prune_layers_heads_neurons(model, recipe, task)
    if recipe.hidden_kept < 1:
        keep_width(model, recipe.hidden_kept, _train_rows(task)[0])
    return model


def _prune_layers_heads_neurons(model: PreTrainedModel, recipe: StructuredPruning,
                                task: Task) -> PreTrainedModel:
    model_type = model.config.model_type
    if model_type not in ARCHITECTURES:
        raise InputError("space.pruning.methods",
                         f"structured pruning does not support {model_type!r}")
    attribute, arch = ARCHITECTURES[model_type]
    layers = list(encoder_layer_list(model, attribute, arch))
    if recipe.layers_dropped >= len(layers):
        raise InputError(
            "space.pruning.structured.layers_dropped",
            f"the model has {len(layers)} layers; cannot drop {recipe.layers_dropped}",
        )
    if recipe.layer_selection == "importance":
        kept = _layers_by_importance(model, attribute, arch, recipe.layers_dropped, task)
    else:
        kept = _evenly_spaced(len(layers), len(layers) - recipe.layers_dropped)
    layers = [layers[i] for i in kept]
    set_encoder_layers(model, attribute, arch, layers)
    if recipe.scope is None:  # no head or neuron is pruned
        return model
    head_size = size_of_heads(model, arch)
    heads = [_head_importance(layer, arch, head_size) for layer in layers]
    for layer, keep in zip(layers, _choose(heads, recipe.heads_kept, recipe.scope)):
        keep_heads(layer, arch, keep, head_size)
    neurons = [layer.get_submodule(arch.ffn_in).weight.detach().norm(dim=1) for layer in layers]
    for layer, keep in zip(layers, _choose(neurons, recipe.ffn_kept, recipe.scope)):
        keep_neurons(layer, arch, keep)
    return model


def _evenly_spaced(total: int, count: int) -> list[int]:
    """``count`` indices spread over ``range(total)``, first and last included (distinct, since
    the spacing is at least 1)."""
    return [int(round(i)) for i in np.linspace(0, total - 1, count)]


def _layers_by_importance(model: PreTrainedModel, attribute: str, arch: Architecture,
                          drop: int, task: Task) -> list[int]:
    """The layers kept after dropping, one at a time, the layer whose removal hurts least.

    Importance is measured, not guessed from weights: a layer's cost is the cross-entropy on
    ``IMPORTANCE_ROWS`` train rows with that layer skipped. Weight norms say little about a whole
    layer, since the residual stream and LayerNorm rescale its contribution, and which layers can
    go depends on the task (3-of-6 MiniLM layers kept without recovery scored 21-75% depending on
    the choice, issue #3). Dropping greedily, re-measuring after each removal, accounts for layers
    that stand in for each other; it costs ``drop`` rounds of at most one evaluation per layer.
    """
    inputs, labels = _train_rows(task)
    layers = list(encoder_layer_list(model, attribute, arch))
    kept = list(range(len(layers)))
    try:
        for _ in range(drop):
            losses = {}
            for candidate in kept:
                set_encoder_layers(model, attribute, arch,
                                   [layers[i] for i in kept if i != candidate])
                losses[candidate] = _loss(model, inputs, labels)
            kept.remove(min(losses, key=losses.__getitem__))
    finally:
        set_encoder_layers(model, attribute, arch, layers)
    return kept


def _train_rows(task: Task) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The first ``IMPORTANCE_ROWS`` train rows, tokenized, and their labels."""
    inputs = {name: torch.tensor(values[:IMPORTANCE_ROWS])
              for name, values in task.encoded("train").items()}
    return inputs, torch.tensor(task.labels("train")[:IMPORTANCE_ROWS])


@torch.no_grad()
def _loss(model: PreTrainedModel, inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> float:
    was_training = model.training
    model.eval()
    logits = model(**inputs).logits
    model.train(was_training)
    return F.cross_entropy(logits, labels).item()


def _choose(scores: list[torch.Tensor], fraction: float, scope: Scope) -> list[list[int]]:
    """Per layer, the sorted indices of the units kept (at least one per layer).

    ``layer`` keeps the top ``fraction`` of every layer. ``global`` keeps the top ``fraction`` of
    all units, each scored relative to its layer's mean: raw weight norms grow and shrink from
    layer to layer, and ranking them across layers would empty the layers with small weights
    rather than keep each layer's strongest units.
    """
    if fraction >= 1:
        return [list(range(len(s))) for s in scores]
    if scope == "layer":
        return [sorted(torch.argsort(s, descending=True)[: max(1, math.ceil(fraction * len(s)))]
                       .tolist()) for s in scores]
    relative = [s / s.mean() for s in scores]
    budget = max(len(scores), math.ceil(fraction * sum(len(s) for s in scores)))
    # Each layer's best unit first, so that no layer is emptied; then the best of the rest.
    kept = [{int(r.argmax())} for r in relative]
    rest = sorted(((float(r[i]), layer, i) for layer, r in enumerate(relative)
                   for i in range(len(r)) if i not in kept[layer]), reverse=True)
    for _, layer, i in rest[: budget - len(scores)]:
        kept[layer].add(i)
    return [sorted(k) for k in kept]


def _head_importance(layer: nn.Module, arch: Architecture, head_size: int) -> torch.Tensor:
    norms = torch.zeros(())
    for part in (arch.query, arch.key, arch.value):
        weight = layer.get_submodule(part).weight.detach()
        norms = norms + weight.view(-1, head_size, weight.shape[1]).pow(2).sum(dim=(1, 2))
    out = layer.get_submodule(arch.attention_out).weight.detach()
    norms = norms + out.view(out.shape[0], -1, head_size).pow(2).sum(dim=(0, 2))
    return norms.sqrt()


def _prune_unstructured(model: PreTrainedModel, recipe: UnstructuredPruning,
                        task: Task) -> PreTrainedModel:
    """The seed's recipe: zero the ``ratio`` smallest weights (L1) of every Linear layer."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            torch_prune.l1_unstructured(module, name="weight", amount=recipe.ratio)
    return model


def make_permanent(model: PreTrainedModel) -> PreTrainedModel:
    """Fold pruning masks into the weights (``prune.remove``), leaving plain Linear layers."""
    for module in model.modules():
        if isinstance(module, nn.Linear) and torch_prune.is_pruned(module):
            torch_prune.remove(module, "weight")
    return model


NONE = PruningMethod(name="none", recipe=NoPruning, label="not pruned")
STRUCTURED = PruningMethod(
    name="structured", recipe=StructuredPruning, space=StructuredSpace,
    prune=_prune_structured, recovers=True,
    steps={"prune_recover": pruned_and_recovered}, training=recovery_phases,
    colour="#9467bd", symbol="diamond",
)
UNSTRUCTURED = PruningMethod(
    name="unstructured", recipe=UnstructuredPruning, space=UnstructuredSpace,
    prune=_prune_unstructured, recovers=True,
    steps={"prune_recover": pruned_and_recovered}, training=recovery_phases,
    colour="#17becf", symbol="square",
)
CHANNELS = PruningMethod(
    name="channels", recipe=ChannelPruning, space=ChannelsSpace,
    prune=prune_channels, recovers=True,
    steps={"prune_recover": pruned_and_recovered}, training=recovery_phases,
    colour="#637939", symbol="hexagon", label="channel pruning",
)
