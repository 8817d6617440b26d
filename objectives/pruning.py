"""Pruning build step: remove heads, FFN neurons and layers, or zero the smallest weights.

Structured pruning shrinks the ``nn.Linear`` layers themselves with
``transformers.pytorch_utils.prune_linear_layer`` (transformers 5 removed ``prune_heads``), so the
exported ONNX graph has smaller MatMuls. A head's importance is the L2 norm of the weights it owns
(its rows of Q, K and V and its columns of the attention output); a neuron's, the L2 norm of its
row of the first FFN layer. Pruned models have per-layer shapes no config can express:
``edgetune-shapes.json`` records them and ``load_pruned`` rebuilds the model before reading its
weights.

Search space: ``edgetune.spaces.pruning``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from torch.nn.utils import prune as torch_prune
from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedModel
from transformers.pytorch_utils import prune_linear_layer

from edgetune.errors import InputError
from edgetune.objectives.task import Task
from edgetune.spaces.pruning import (
    PruningRecipe,
    PruningSpace,
    Scope,
    StructuredPruning,
    UnstructuredPruning,
)

SHAPES_FILE = "edgetune-shapes.json"  # per-layer shapes beside a structurally pruned checkpoint
# Rows of the train split on which dropping a layer is measured: enough for a stable mean loss,
# few enough that measuring every candidate layer costs seconds next to recovery's minutes.
IMPORTANCE_ROWS = 64


@dataclass(frozen=True)
class Architecture:
    """Where an encoder family keeps the parts structured pruning edits."""

    encoder: str  # dotted path, below the task model's base attribute, to the ModuleList of layers
    layers_attr: str  # config attribute holding the number of layers
    heads_attr: str  # config attribute holding the number of heads
    hidden_attr: str  # config attribute holding the hidden size
    query: str
    key: str
    value: str
    attention_out: str
    ffn_in: str
    ffn_out: str
    heads_module: str  # module whose head count attribute must follow the pruning
    heads_field: str


_BERT = Architecture(
    encoder="encoder.layer", layers_attr="num_hidden_layers", heads_attr="num_attention_heads",
    hidden_attr="hidden_size", query="attention.self.query", key="attention.self.key",
    value="attention.self.value", attention_out="attention.output.dense",
    ffn_in="intermediate.dense", ffn_out="output.dense", heads_module="attention.self",
    heads_field="num_attention_heads",
)
ARCHITECTURES: dict[str, tuple[str, Architecture]] = {
    # model_type: (attribute of the task model holding the encoder, architecture)
    "bert": ("bert", _BERT),
    "roberta": ("roberta", _BERT),
    "xlm-roberta": ("roberta", _BERT),
    "distilbert": (
        "distilbert",
        Architecture(
            encoder="transformer.layer", layers_attr="n_layers", heads_attr="n_heads",
            hidden_attr="dim", query="attention.q_lin", key="attention.k_lin",
            value="attention.v_lin", attention_out="attention.out_lin", ffn_in="ffn.lin1",
            ffn_out="ffn.lin2", heads_module="attention", heads_field="n_heads",
        ),
    ),
}


def check_space(model_config: dict[str, object], space: PruningSpace) -> None:
    """Refuse, before any work starts, a pruning space this model (its ``config.json``) cannot take.

    Raises:
        InputError: structured pruning of an architecture it does not know, or as many layers
            to drop as the model has.
    """
    if "structured" not in space.methods:
        return
    model_type = model_config.get("model_type")
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


def encoder_layers(model_config: dict[str, object]) -> int | None:
    """How many encoder layers a model (its ``config.json``) has, where structured pruning knows
    its architecture."""
    known = ARCHITECTURES.get(str(model_config.get("model_type")))
    layers = model_config.get(known[1].layers_attr) if known else None
    return layers if isinstance(layers, int) else None


def prune(model: PreTrainedModel, recipe: PruningRecipe, task: Task) -> PreTrainedModel:
    """Apply ``recipe`` to ``model`` in place and return it.

    ``task`` provides the train rows on which layer importance is measured. Unstructured pruning
    leaves ``torch.nn.utils.prune`` masks in place so that recovery training cannot regrow the
    zeroed weights; ``make_permanent`` removes them before saving.
    """
    if isinstance(recipe, StructuredPruning):
        return _prune_structured(model, recipe, task)
    if isinstance(recipe, UnstructuredPruning):
        return _prune_unstructured(model, recipe.ratio)
    return model


def write_shapes(model: PreTrainedModel, folder: Path) -> None:
    """Write, beside a saved checkpoint, the per-layer shapes ``load_pruned`` needs."""
    if model.config.model_type in ARCHITECTURES:
        (folder / SHAPES_FILE).write_text(json.dumps(layer_shapes(model), indent=2))


def load_pruned(folder: Path, trust_remote_code: bool = False) -> PreTrainedModel:
    """Rebuild the per-layer shapes recorded in ``edgetune-shapes.json``, then read the weights."""
    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    model = AutoModelForSequenceClassification.from_config(
        config, attn_implementation="eager", trust_remote_code=trust_remote_code)
    attribute, arch = ARCHITECTURES[config.model_type]
    shapes = json.loads((folder / SHAPES_FILE).read_text())["layers"]
    for layer, shape in zip(_layers(model, attribute, arch), shapes, strict=True):
        _keep_heads(layer, arch, list(range(shape["heads"])), shape["head_size"])
        _keep_neurons(layer, arch, list(range(shape["ffn"])))
    state = {}
    for file in sorted(folder.glob("*.safetensors")):
        state.update(load_file(file))
    model.load_state_dict(state)
    return model.eval()


def layer_shapes(model: PreTrainedModel) -> dict[str, list[dict[str, int]]]:
    """Heads, head size and FFN width of every encoder layer, in order."""
    attribute, arch = ARCHITECTURES[model.config.model_type]
    head_size = _head_size(model, arch)
    return {
        "layers": [
            {
                "heads": layer.get_submodule(arch.query).out_features // head_size,
                "head_size": head_size,
                "ffn": layer.get_submodule(arch.ffn_in).out_features,
            }
            for layer in _layers(model, attribute, arch)
        ]
    }


def _layers(model: PreTrainedModel, attribute: str, arch: Architecture) -> nn.ModuleList:
    return model.get_submodule(f"{attribute}.{arch.encoder}")  # type: ignore[return-value]


def _set_layers(model: PreTrainedModel, attribute: str, arch: Architecture,
                layers: list[nn.Module]) -> None:
    _replace(model, f"{attribute}.{arch.encoder}", nn.ModuleList(layers))
    setattr(model.config, arch.layers_attr, len(layers))


def _head_size(model: PreTrainedModel, arch: Architecture) -> int:
    config = model.config
    return getattr(config, arch.hidden_attr) // getattr(config, arch.heads_attr)


def _prune_structured(model: PreTrainedModel, recipe: StructuredPruning,
                      task: Task) -> PreTrainedModel:
    model_type = model.config.model_type
    if model_type not in ARCHITECTURES:
        raise InputError("space.pruning.methods",
                         f"structured pruning does not support {model_type!r}")
    attribute, arch = ARCHITECTURES[model_type]
    layers = list(_layers(model, attribute, arch))
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
    _set_layers(model, attribute, arch, layers)
    if recipe.scope is None:  # no head or neuron is pruned
        return model
    head_size = _head_size(model, arch)
    heads = [_head_importance(layer, arch, head_size) for layer in layers]
    for layer, keep in zip(layers, _choose(heads, recipe.heads_kept, recipe.scope)):
        _keep_heads(layer, arch, keep, head_size)
    neurons = [layer.get_submodule(arch.ffn_in).weight.detach().norm(dim=1) for layer in layers]
    for layer, keep in zip(layers, _choose(neurons, recipe.ffn_kept, recipe.scope)):
        _keep_neurons(layer, arch, keep)
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
    inputs = {name: torch.tensor(values[:IMPORTANCE_ROWS])
              for name, values in task.encoded("train").items()}
    labels = torch.tensor(task.labels("train")[:IMPORTANCE_ROWS])
    layers = list(_layers(model, attribute, arch))
    kept = list(range(len(layers)))
    try:
        for _ in range(drop):
            losses = {}
            for candidate in kept:
                _set_layers(model, attribute, arch, [layers[i] for i in kept if i != candidate])
                losses[candidate] = _loss(model, inputs, labels)
            kept.remove(min(losses, key=losses.__getitem__))
    finally:
        _set_layers(model, attribute, arch, layers)
    return kept


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


def _keep_heads(layer: nn.Module, arch: Architecture, heads: list[int], head_size: int) -> None:
    rows = torch.tensor([h * head_size + i for h in heads for i in range(head_size)])
    for part in (arch.query, arch.key, arch.value):
        _replace(layer, part, prune_linear_layer(layer.get_submodule(part), rows, dim=0))
    _replace(layer, arch.attention_out,
             prune_linear_layer(layer.get_submodule(arch.attention_out), rows, dim=1))
    attention = layer.get_submodule(arch.heads_module)
    setattr(attention, arch.heads_field, len(heads))
    if hasattr(attention, "all_head_size"):
        attention.all_head_size = len(heads) * head_size


def _keep_neurons(layer: nn.Module, arch: Architecture, neurons: list[int]) -> None:
    index = torch.tensor(neurons)
    _replace(layer, arch.ffn_in, prune_linear_layer(layer.get_submodule(arch.ffn_in), index, 0))
    _replace(layer, arch.ffn_out, prune_linear_layer(layer.get_submodule(arch.ffn_out), index, 1))


def _replace(root: nn.Module, dotted: str, module: nn.Module) -> None:
    parent, _, name = dotted.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def _prune_unstructured(model: PreTrainedModel, ratio: float) -> PreTrainedModel:
    """The seed's recipe: zero the ``ratio`` smallest weights (L1) of every Linear layer."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            torch_prune.l1_unstructured(module, name="weight", amount=ratio)
    return model


def make_permanent(model: PreTrainedModel) -> PreTrainedModel:
    """Fold pruning masks into the weights (``prune.remove``), leaving plain Linear layers."""
    for module in model.modules():
        if isinstance(module, nn.Linear) and torch_prune.is_pruned(module):
            torch_prune.remove(module, "weight")
    return model
